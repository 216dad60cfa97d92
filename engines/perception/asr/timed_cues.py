"""Verbal cues of a transcript, each with the time span of the speech that carries it.

The cues themselves come from engines.perception.verbal (VADER, the emotion-word table, the quote), computed on the
English text. A recognised transcript then gives each cue the span of the segments holding its evidence (the
matched words, the "!" or "?"), and a cue with no such evidence (the quote, neutral wording) the span of all the
speech, so verbal cues line up with the visual and vocal ones on one timeline. A client's transcript has no
times: its cues stay untimed.
"""

from __future__ import annotations

import re

from engines.perception.asr.recognizer import AsrResult
from engines.perception.verbal import VerbalResult, verbal_cues
from engines.types import Cue, Transcript, TranscriptSegment


def transcript_cues(transcript: Transcript | None, heard: AsrResult | None = None) -> VerbalResult:
    if transcript is None:
        return VerbalResult()
    if transcript.source == "client" or heard is None:
        return verbal_cues(transcript.text)
    text = transcript.english or transcript.text
    result = verbal_cues(text)
    segments = heard.english_segments if transcript.english else transcript.segments
    for cue in result.cues:
        _time(cue, segments)
        if cue.text.startswith("says:"):
            cue.evidence.update({"source": "asr", "language": transcript.language, "heard": transcript.text,
                                 "language_probability": heard.language_probability})
            if transcript.truncated_at_s is not None:
                cue.evidence["truncated_at_s"] = transcript.truncated_at_s
            if heard.dropped:  # segments not quoted because they looked like Whisper's non-speech boilerplate
                cue.evidence["dropped_segments"] = dict(heard.dropped)
    return result


def _time(cue: Cue, segments: list[TranscriptSegment]) -> None:
    if not segments:
        return
    hits = [s for s in segments if _carries(s.text, cue)]
    span = hits or segments
    cue.start, cue.end = span[0].start, span[-1].end


def _carries(segment_text: str, cue: Cue) -> bool:
    ev = cue.evidence
    if "exclamation_marks" in ev:
        return "!" in segment_text
    if "question_marks" in ev:
        return "?" in segment_text
    words = [*ev.get("words", []), *ev.get("negative_words", []), *ev.get("positive_words", [])]
    low = segment_text.lower().replace("’", "'")
    return any(re.search(r"(?<![a-z'])" + re.escape(w.lower()), low) for w in words)
