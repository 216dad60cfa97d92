"""Lite audio perception: silero-vad speech segments, prosody and voice quality as EMER-style auditory cues."""

from engines.perception.audio.perceiver import AudioPerceiver, AudioResult

__all__ = ["AudioPerceiver", "AudioResult"]
