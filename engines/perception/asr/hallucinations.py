"""Whisper's boilerplate on non-speech: lines it was trained on from subtitle credits, and repeated lines.

On music, noise or silence Whisper tends to emit the closing lines of YouTube videos and subtitle credits
("thanks for watching", "字幕由 Amara.org 社区提供"), or one line over and over. Such segments are dropped before the
transcript reaches the verbal cues; what was dropped is counted, never silently rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Matched against the segment text lowercased with spaces and punctuation removed.
BOILERPLATE = (
    "thanksforwatching", "thankyouforwatching", "thanksforlistening", "thankyouforlistening",
    "pleasesubscribe", "likeandsubscribe", "subscribetomychannel", "dontforgettosubscribe",
    "seeyouinthenextvideo", "seeyounexttime", "subtitlesby", "captionsby", "transcribedby", "translatedby",
    "amaraorg", "subtitleseditor", "www", "http",
    "字幕", "订阅", "訂閱", "点赞", "點贊", "打赏", "打賞", "谢谢观看", "謝謝觀看", "感谢观看", "感謝觀看",
    "明镜与点点", "明鏡與點點", "优优独播剧场", "yoyotelevisionseries",
)
# Whisper's own thresholds for "probably not speech" and "degenerate repetition".
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
MAX_COMPRESSION = 2.4

_STRIP = re.compile(r"[\W_]+", re.UNICODE)


@dataclass
class RawSegment:
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    words: tuple[tuple[float, float, str, float], ...] = ()  # (start, end, word, probability)


def normalise(text: str) -> str:
    return _STRIP.sub("", text.lower())


def why_dropped(seg: RawSegment, kept: list[RawSegment]) -> str | None:
    """The reason a segment is not speech worth quoting, or None to keep it."""
    norm = normalise(seg.text)
    if not norm:
        return "empty"
    if any(b in norm for b in BOILERPLATE):
        return "boilerplate"
    if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB:
        return "no_speech"
    if seg.compression_ratio > MAX_COMPRESSION:
        return "repetitive"
    if _repeats_within(norm):
        return "repetitive"
    if kept and normalise(kept[-1].text) == norm:
        return "repeated_line"
    return None


def _repeats_within(norm: str) -> bool:
    """One short unit said six or more times in a row fills the whole segment ("好好好好好好", "no no no no no no")."""
    for size in range(1, min(12, len(norm) // 6) + 1):
        unit = norm[:size]
        if len(norm) >= 6 * size and norm == unit * (len(norm) // size) + unit[: len(norm) % size]:
            return True
    return False


def clean(segments: list[RawSegment]) -> tuple[list[RawSegment], dict[str, int]]:
    """Kept segments in order, and how many were dropped per reason."""
    kept: list[RawSegment] = []
    dropped: dict[str, int] = {}
    for seg in segments:
        reason = why_dropped(seg, kept)
        if reason is None:
            kept.append(RawSegment(seg.start, seg.end, seg.text.strip(), seg.avg_logprob, seg.no_speech_prob,
                                   seg.compression_ratio, seg.words))
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    return kept, dropped
