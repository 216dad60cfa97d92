"""The OpenAI-compatible cue extractor against a REAL local OpenAI-compatible server: llama_cpp.server serving
SmolLM2-135M-Instruct (JSON mode). The tiny model's cues may be poor; what is tested is that the client speaks
the protocol, parses and validates the reply, and degrades to the offline extractor when it must."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from servers import free_port

from eval.embed import CachedEmbedder
from eval.extract_offline import OfflineExtractor
from eval.extract_openai import EXAMPLE_CUES, ExtractionFailed, OpenAIExtractor, echoes_example, parse_cues
from xemo.settings import EvalSettings

PARAGRAPH = (
    "In the video, a woman smiles and nods. In the audio, her voice is cheerful and loud. "
    "She seems happy about the news."
)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import llama_cpp.server.app  # noqa: F401 - needs the [server] extras (fastapi, sse-starlette, ...)
    except ImportError as e:
        pytest.skip(f"llama_cpp.server is not importable ({e}); `make install` installs its dependencies")
    from engines.llm.models import smollm2_gguf_path

    port = free_port()
    # llama.cpp logs a lot while loading: a file, not a pipe nobody reads (a full pipe blocks the server).
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_gguf_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "2",
            "--model_alias",
            "smollm2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not come up within 120 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def settings_for(base: str, retries: int = 1) -> EvalSettings:
    return EvalSettings(openai_base_url=base, openai_model="smollm2", openai_retries=retries, openai_timeout_s=120)


def test_json_mode_reply_from_a_real_server(llama_server: str, minilm: CachedEmbedder) -> None:
    # One completion (no retries); 160 tokens keep it short, so the reply may be cut: then the client must
    # fall back rather than fail.
    ext = OpenAIExtractor(settings_for(llama_server, retries=0), fallback=OfflineExtractor(minilm), max_tokens=160)
    try:
        cues = ext.extract(PARAGRAPH)
    finally:
        ext.close()
    assert ext.last_reply is not None and ext.last_reply.lstrip().startswith("{")  # JSON mode is honoured
    assert set(cues) == {"visual", "auditory", "emotional"}
    assert all(isinstance(c, str) and c for xs in cues.values() for c in xs)
    assert any(cues.values())
    assert ext.stats["ok"] + ext.stats["fallback"] == 1
    try:
        parsed = parse_cues(ext.last_reply)
    except ExtractionFailed:
        parsed = None
    if ext.stats["ok"]:  # a usable reply is used as it is
        assert cues == parsed
    else:  # a cut, empty or copied reply: the offline extractor answered
        assert cues == OfflineExtractor(minilm).extract(PARAGRAPH)


def test_unusable_endpoint_falls_back_with_a_warning(
    llama_server: str, minilm: CachedEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    # the real server, wrong path: every attempt gets a 404, then the offline extractor answers
    bad = llama_server.rsplit("/v1", 1)[0] + "/no-such-api"
    ext = OpenAIExtractor(settings_for(bad, retries=1), fallback=OfflineExtractor(minilm))
    with caplog.at_level(logging.WARNING, logger="xemo.eval.extract"):
        cues = ext.extract(PARAGRAPH)
    ext.close()
    assert ext.stats == {"ok": 0, "retried": 0, "fallback": 1}
    assert "offline extractor" in caplog.text
    assert cues == OfflineExtractor(minilm).extract(PARAGRAPH)


def test_unreachable_endpoint_without_fallback_raises() -> None:
    ext = OpenAIExtractor(settings_for(f"http://127.0.0.1:{free_port()}/v1", retries=0), fallback=None)
    with pytest.raises(ExtractionFailed):
        ext.extract(PARAGRAPH)
    ext.close()


def test_parse_cues_validates_and_normalises() -> None:
    assert parse_cues('{"visual": ["A smile."], "audio": "Loud voice.", "emotion": ["Happy.", "Happy."]}') == {
        "visual": ["A smile."],
        "auditory": ["Loud voice."],
        "emotional": ["Happy."],
    }
    fenced = 'Here you go:\n```json\n{"visual": [], "auditory": [], "emotional": ["Calm."]}\n```'
    assert parse_cues(fenced)["emotional"] == ["Calm."]
    for bad in (
        "",
        "[1, 2]",
        '{"colour": ["red"]}',
        '{"visual": [], "auditory": [], "emotional": []}',
        '{"visual": [1, 2]}',
        "{not json",
    ):
        with pytest.raises(ExtractionFailed):
            parse_cues(bad)


def test_a_copy_of_the_worked_example_is_rejected() -> None:
    """SmolLM2 tends to return the prompt's example; such a reply must not be scored as the clip's cues."""
    assert echoes_example({k: list(v) for k, v in EXAMPLE_CUES.items()})
    mostly = {
        "visual": ["A young woman sits at a desk.", "The office is dim."],  # pronouns swapped
        "auditory": ["A loud voice."],
        "emotional": ["She feels sad."],
    }
    assert echoes_example(mostly)
    assert not echoes_example(
        {"visual": ["A woman smiles.", "The office is dim."], "auditory": ["Loud."], "emotional": ["Happy."]}
    )
