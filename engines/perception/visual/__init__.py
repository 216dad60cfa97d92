"""Visual cues of the lite profile: MediaPipe face mesh geometry + the FER2013 mini-Xception expression model."""

from engines.perception.visual.perceiver import VisualPerceiver, VisualResult

__all__ = ["VisualPerceiver", "VisualResult"]
