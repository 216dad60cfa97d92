"""One account of whether anyone spoke, when the speech detector and the transcript disagree.

A transcript with words means someone spoke, even when the detector found no speech in the audio (speech too
soft, masked or off-mic). Then the answer must not claim "no speech was heard" next to a quote, and nothing
about the voice can be measured, so no vocal cue is invented: speech counts as found, with no segments and no
cues, and the summary says why.
"""

from __future__ import annotations

import re
from dataclasses import replace

from engines.perception.audio.perceiver import AudioResult


def has_words(transcript: str | None) -> bool:
    return bool(transcript) and re.search(r"\w", transcript or "") is not None


def reconcile_speech(audio: AudioResult | None, transcript: str | None) -> AudioResult | None:
    """The audio result to state, given the transcript. `None` (no audio track) stays `None`: there was no
    audio to hear, and the answer says so; a result with detected speech is returned as it is."""
    if audio is None or audio.speech_found or not has_words(transcript):
        return audio
    return replace(audio, speech_found=True, speech_segments=[], cues=[], speech_source="transcript",
                   summary="speech too soft to measure: the transcript has words, the detector found none")
