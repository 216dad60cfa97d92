"""Data that flows through the pipeline: the ingested clip, cues, events and the final answer.

These are plain dataclasses with no HTTP in them; the server serialises them with `to_dict()`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Modality = Literal["visual", "auditory", "verbal"]


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # as reported by the container (may be an estimate)
    codec: str = ""
    rotation: int = 0


@dataclass
class AudioInfo:
    sample_rate: int  # of the decoded audio we keep (16 kHz)
    channels: int  # of the decoded audio we keep (1: mono)
    seconds: float
    codec: str = ""
    source_sample_rate: int = 0  # of the uploaded stream
    source_channels: int = 0


@dataclass
class Clip:
    """What ingest produces. Frames are RGB uint8 (N, H, W, 3) downscaled to the configured long side."""

    container: str
    duration_s: float
    video: VideoInfo | None
    audio_info: AudioInfo | None
    frames: np.ndarray | None  # N uniformly sampled frames over the whole clip
    frame_times: list[float]  # seconds, one per sampled frame
    audio: np.ndarray | None  # mono float32 at audio_info.sample_rate
    timeline: np.ndarray | None = None  # denser frames for cue timelines (capped fps)
    timeline_times: list[float] = field(default_factory=list)
    sha256: str = ""  # of the uploaded bytes (video + audio), for caching
    timings: dict[str, float] = field(default_factory=dict)  # ingest sub-stages (demux, video_decode, audio_decode)

    @classmethod
    def text_only(cls) -> Clip:
        """No media at all: a request made of its transcript alone."""
        return cls(container="none", duration_s=0.0, video=None, audio_info=None, frames=None, frame_times=[],
                   audio=None)

    @property
    def sample_rate(self) -> int:
        return self.audio_info.sample_rate if self.audio_info else 16000

    def probe_dict(self) -> dict[str, Any]:
        """What `xemo probe --json` prints."""
        return {
            "container": self.container,
            "duration_s": round(self.duration_s, 3),
            "video": asdict(self.video) if self.video else None,
            "audio": asdict(self.audio_info) if self.audio_info else None,
            "frame_times": [round(t, 3) for t in self.frame_times],
            "timeline_frames": 0 if self.timeline is None else len(self.timeline),
        }


# Cue ids are the modality's letter plus a 1-based index within one answer: v1, a2, t1.
CUE_ID_PREFIX: dict[str, str] = {"visual": "v", "auditory": "a", "verbal": "t"}


@dataclass
class Cue:
    modality: Modality
    text: str  # short atomic statement, EMER style ("the corners of her mouth turn up")
    start: float | None = None
    end: float | None = None
    strength: float = 0.0  # 0..1
    evidence: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # unique within its answer; set by assign_cue_ids once the answer's cue list is final

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assign_cue_ids(cues: list[Cue]) -> list[Cue]:
    """Number the cues per modality in list order (v1, v2, a1, t1, ...), in place; returns the same list."""
    counts: dict[str, int] = {}
    for c in cues:
        prefix = CUE_ID_PREFIX[c.modality]
        counts[prefix] = counts.get(prefix, 0) + 1
        c.id = f"{prefix}{counts[prefix]}"
    return cues


SegmentKind = Literal["observation", "interpretation", "absence", "conclusion", "model_text"]


@dataclass
class Segment:
    """One piece of an explanation. Observations and interpretations cite the ids of the cues they state;
    `model_text` is free text of a model that had no cues to cite. The texts, concatenated, are the explanation."""

    text: str
    kind: SegmentKind
    cue_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TranscriptWord:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class TranscriptSegment:
    start: float
    end: float
    text: str
    words: list[TranscriptWord] = field(default_factory=list)  # word timings, where the recogniser gives them


@dataclass
class Transcript:
    """What was said: given by the client, or recognised from the clip's own speech."""

    text: str
    source: Literal["client", "asr"]
    language: str | None = None
    english: str | None = None  # English translation (equal to text when the speech is English)
    segments: list[TranscriptSegment] = field(default_factory=list)
    truncated_at_s: float | None = None  # set when only the first seconds were transcribed (the ASR budget)
    client_text: str | None = None  # the client's transcript, when the speech was recognised anyway (asr option)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AnalyzeRequest:
    clip: Clip
    transcript: str | None = None
    labels: list[str] | None = None  # overrides the configured label set
    max_tokens: int | None = None
    temperature: float | None = None
    # Speech recognition for this request: True = even with a client transcript, False = never, None = settings.
    asr: bool | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    received_at: float = field(default_factory=time.perf_counter)  # from HTTP receipt when served


@dataclass
class Answer:
    id: str
    model: str
    profile: str
    emotion: dict[str, Any]  # {"label": str, "scores": {label: prob}}
    cues: list[Cue]
    explanation: str
    timings: dict[str, float]  # time_to_label_s, total_s and one entry per stage (seconds)
    usage: dict[str, int] = field(default_factory=dict)  # prompt tokens per modality, generated tokens
    segments: list[Segment] = field(default_factory=list)  # the explanation, piece by piece
    transcript: Transcript | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cues"] = [c.to_dict() for c in self.cues]
        return d


# Stream events, in order: one LabelEvent, CueEvents, then TokenEvents with a SegmentEvent after each finished
# segment, then one DoneEvent.
@dataclass
class LabelEvent:
    label: str
    scores: dict[str, float]
    type: str = "label"


@dataclass
class CueEvent:
    cue: Cue
    type: str = "cue"


@dataclass
class TokenEvent:
    text: str
    type: str = "token"


@dataclass
class SegmentEvent:
    segment: Segment
    type: str = "segment"


@dataclass
class DoneEvent:
    answer: Answer
    type: str = "done"


Event = LabelEvent | CueEvent | TokenEvent | SegmentEvent | DoneEvent


def event_to_dict(ev: Event) -> dict[str, Any]:
    if isinstance(ev, LabelEvent):
        return {"type": "label", "label": ev.label, "scores": ev.scores}
    if isinstance(ev, CueEvent):
        return {"type": "cue", **ev.cue.to_dict()}
    if isinstance(ev, TokenEvent):
        return {"type": "token", "text": ev.text}
    if isinstance(ev, SegmentEvent):
        return {"type": "segment", **ev.segment.to_dict()}
    return {"type": "done", "answer": ev.answer.to_dict()}
