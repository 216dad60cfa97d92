"""The wire models (xemo/schemas.py) against the dataclasses they mirror (engines/types.py), their published JSON
Schemas, the option parsing they do for the server, and the client's SSE parsing of every event type (a job
stream's `restarted` too)."""

from __future__ import annotations

import dataclasses
import json
import typing

import jsonschema_rs
import pytest
from pydantic import BaseModel, ValidationError
from wire import generated

from engines import types as t
from server.sse import sse_frame
from xemo import schemas
from xemo.client import SSEParser

PUBLISHED = generated()


def full_answer() -> t.Answer:
    """An answer with every field filled, as a pipeline builds it."""
    cues = t.assign_cue_ids([
        t.Cue("visual", "the corners of her mouth turn up", 0.5, 2.0, 0.6, {"mouth_corner_lift": 0.03}),
        t.Cue("auditory", "the pitch rises", None, None, 0.4, {}),
        t.Cue("verbal", 'says: "we won"', None, None, 0.8, {"vader": {"compound": 0.7}}),
    ])
    return t.Answer(
        id="r1", model="m", profile="lite", emotion={"label": "happy", "scores": {"happy": 0.8, "sad": 0.2}},
        cues=cues, explanation="In the video, she smiles.",
        timings={"time_to_label_s": 0.5, "total_s": 1.0, "visual": 0.2},
        usage={"prompt_tokens": 300, "generated_tokens": 9, "cues_visual": 1},
        segments=[t.Segment("In the video, she smiles.", "observation", ["v1"])],
        transcript=t.Transcript("we won", "asr", "en", "we won", [t.TranscriptSegment(
            0.0, 1.0, "we won", [t.TranscriptWord(0.0, 0.4, "we", 0.9), t.TranscriptWord(0.4, 1.0, "won", 0.8)])],
                                12.0),
    )


PAIRS: list[tuple[type, type[BaseModel]]] = [
    (t.Cue, schemas.Cue),
    (t.Segment, schemas.Segment),
    (t.TranscriptWord, schemas.TranscriptWord),
    (t.TranscriptSegment, schemas.TranscriptSegment),
    (t.Transcript, schemas.Transcript),
    (t.Answer, schemas.Answer),
]


@pytest.mark.parametrize("dc, model", PAIRS, ids=lambda x: x.__name__)
def test_every_dataclass_field_is_in_the_model_and_its_published_schema(dc: type, model: type[BaseModel]) -> None:
    fields = {f.name for f in dataclasses.fields(dc)}
    assert fields <= set(model.model_fields), fields - set(model.model_fields)
    published = PUBLISHED.openapi["components"]["schemas"][model.__name__]["properties"]
    assert fields <= set(published)
    # the wire always carries every dataclass field, so the schema requires them
    required = set(PUBLISHED.openapi["components"]["schemas"][model.__name__].get("required", []))
    assert fields <= required


def test_the_literals_match() -> None:
    assert typing.get_args(t.Modality) == typing.get_args(schemas.Modality)
    assert typing.get_args(t.SegmentKind) == typing.get_args(schemas.SegmentKind)
    assert set(t.CUE_ID_PREFIX) == set(typing.get_args(schemas.Modality))


def test_a_full_answer_validates_and_round_trips_unchanged() -> None:
    d = full_answer().to_dict()
    PUBLISHED.component("Answer", d)
    assert schemas.wire(schemas.Answer, d) == json.loads(json.dumps(d))
    d["cues"][0]["modality"] = "smell"
    with pytest.raises(jsonschema_rs.ValidationError):
        PUBLISHED.component("Answer", d)
    with pytest.raises(ValidationError):
        schemas.Answer.model_validate(d)


def every_event() -> list[t.Event]:
    a = full_answer()
    return [t.LabelEvent("happy", {"happy": 0.8, "sad": 0.2}), *(t.CueEvent(c) for c in a.cues),
            t.TokenEvent(" she"), t.SegmentEvent(a.segments[0]), t.DoneEvent(a)]


def test_the_event_models_cover_every_dataclass_event() -> None:
    kinds = {ev.type for ev in every_event()} | {"error"}
    assert kinds == set(schemas.STREAM_EVENT_MODELS)
    assert set(schemas.EVENT_MODELS) == kinds | {"restarted"}  # what a job's stream adds when it is taken over


def test_a_job_streams_restarted_event_is_published_and_parsed_by_the_client() -> None:
    """The frame a process writes when it takes over a job (server/job_queue.py), as the job's SSE sends it."""
    from server.job_queue import _START

    frame = _START.split("'e', '", 1)[1].split("'", 1)[0] + "2}"  # the event the Lua script appends, attempt 2
    ev = json.loads(frame)
    assert ev == {"type": "restarted", "attempt": 2}
    PUBLISHED.event(ev)
    parser, got = SSEParser(), []
    for line in sse_frame(ev["type"], ev).decode().split("\n"):
        if (parsed := parser.feed(line)) is not None:
            got.append(parsed)
    assert len(got) == 1 and isinstance(got[0], schemas.RestartedEvent) and got[0].attempt == 2
    assert schemas.wire_event(ev) == ev
    for bad in ({"type": "restarted"}, {"type": "restarted", "attempt": 1}):
        with pytest.raises(jsonschema_rs.ValidationError):
            PUBLISHED.event(bad)
        with pytest.raises(ValidationError):
            schemas.parse_event(bad)


@pytest.mark.parametrize("ev", every_event(), ids=lambda e: e.type)
def test_every_event_validates_and_round_trips_through_sse_and_the_client(ev: t.Event) -> None:
    d = t.event_to_dict(ev)
    assert set(d) <= set(schemas.EVENT_MODELS[d["type"]].model_fields)  # declared, not let through as extras
    PUBLISHED.event(d)
    assert schemas.wire_event(d) == json.loads(json.dumps(d))  # what the server sends is what the pipeline made
    parser, got = SSEParser(), []
    for line in sse_frame(d["type"], schemas.wire_event(d)).decode().split("\n"):
        if (parsed := parser.feed(line)) is not None:
            got.append(parsed)
    assert len(got) == 1 and type(got[0]) is schemas.EVENT_MODELS[d["type"]]
    assert got[0].model_dump(mode="json", exclude_unset=True) == json.loads(json.dumps(d))


def test_the_error_event_and_envelope() -> None:
    from server.errors import http_error

    err = http_error(422, "nothing to analyse")
    PUBLISHED.component("ErrorEnvelope", err.body("rid"))
    ev = err.event("rid")
    PUBLISHED.event(ev)
    parsed = schemas.parse_event(ev)
    assert isinstance(parsed, schemas.ErrorEvent) and parsed.error.request_id == "rid"
    with pytest.raises(jsonschema_rs.ValidationError):
        PUBLISHED.event({"type": "error", "message": "no envelope"})


def test_each_event_schema_is_self_contained_and_published_with_examples() -> None:
    for kind in schemas.EVENT_MODELS:
        s = schemas.event_schema(kind)
        assert s["$id"] == f"/v1/schemas/events/{kind}.json" and "type" in s["required"]
        assert s["properties"]["type"]["const"] == kind
        jsonschema_rs.Draft202012Validator(s)  # compiles: every $ref resolves inside it
    comps = PUBLISHED.openapi["components"]["schemas"]
    for name in ("Answer", "ErrorEnvelope", "AnalyzeOptions", "LabelEvent", "TokenEvent", "WsOptionsFrame", "Cue"):
        assert comps[name].get("examples"), name
        for example in comps[name]["examples"]:
            PUBLISHED.component(name, example)


@pytest.mark.parametrize(
    "raw, expect",
    [
        ({"transcript": "  hi  ", "labels": "a, b,a", "max_tokens": "12", "temperature": "0.5", "stream": "yes",
          "asr": "true"},
         {"transcript": "hi", "labels": ["a", "b"], "max_tokens": 12, "temperature": 0.5, "asr": True,
          "stream": True}),
        ({"transcript": " ", "max_tokens": "", "stream": "", "asr": " "},
         {"transcript": None, "labels": None, "max_tokens": None, "temperature": None, "asr": None,
          "stream": False}),
        ({"labels": ["x", "y"], "max_tokens": 8.0, "unknown": 1, "asr": False},
         {"transcript": None, "labels": ["x", "y"], "max_tokens": 8, "temperature": None, "asr": False,
          "stream": False}),
        ({"asr": "0"}, {"transcript": None, "labels": None, "max_tokens": None, "temperature": None, "asr": False,
                        "stream": False}),
    ],
)
def test_options_parse_form_text_and_json_values(raw: dict, expect: dict) -> None:
    assert schemas.AnalyzeOptions.model_validate(raw).model_dump() == expect


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"max_tokens": "many"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 12.5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": "nan"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"labels": "only-one"}, "labels"),
        ({"labels": [1, 2]}, "labels"),
        ({"transcript": 5}, "transcript"),
        ({"stream": "perhaps"}, "stream"),
        ({"asr": "sometimes"}, "asr"),
        ({"asr": 1}, "asr"),
    ],
)
def test_bad_options_name_the_field(raw: dict, field: str) -> None:
    from server.errors import InvalidField
    from server.jobs import parse_options

    with pytest.raises(InvalidField) as e:
        parse_options(raw)
    assert e.value.message.startswith(field + ":")


def test_the_websocket_options_frame_takes_options_start_or_no_type() -> None:
    for frame in ({"type": "options", "max_tokens": 4}, {"max_tokens": 4}, {"type": "start", "max_tokens": 4}):
        assert schemas.WsOptionsFrame.model_validate(frame).max_tokens == 4
    with pytest.raises(ValidationError):
        schemas.WsOptionsFrame.model_validate({"type": "end"})
