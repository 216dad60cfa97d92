"""Perception front ends of the lite profile: real measurements turned into EMER-style cues per modality."""
