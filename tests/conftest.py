"""Session-wide fixtures: real media built once with ffmpeg / espeak-ng (tests/media.py) and shared by all tests.

Each fixture is lazy: a file is only built when some test asks for it, then reused for the whole session.
"""

from __future__ import annotations

import os
from pathlib import Path

import media
import pytest

# Ray reads these when it is first imported, which can be any test module's importorskip at collection: no usage
# reporting (no network here), and 127.0.0.1 kept as given (else ray.init rewrites it to the outward address and
# hangs connecting to the cluster it started).
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_wav(media_dir: Path) -> Path:
    """The test sentence at a neutral pitch and rate, 16 kHz mono wav (about 4 s)."""
    return media.speech(media_dir / "speech.wav")


@pytest.fixture(scope="session")
def calm_wav(media_dir: Path) -> Path:
    """Low pitch, slow, quiet: the calm side of the arousal contrast."""
    return media.calm_speech(media_dir / "calm.wav")


@pytest.fixture(scope="session")
def aroused_wav(media_dir: Path) -> Path:
    """High pitch, fast, loud: the aroused side of the arousal contrast."""
    return media.aroused_speech(media_dir / "aroused.wav")


@pytest.fixture(scope="session")
def silence_wav(media_dir: Path) -> Path:
    return media.silence(media_dir / "silence.wav")


@pytest.fixture(scope="session")
def testsrc_mp4(media_dir: Path, speech_wav: Path) -> Path:
    """4 s 320x240 25 fps h264 test pattern (no face) with the speech as its AAC track."""
    return media.testsrc_clip(media_dir / "testsrc.mp4", audio=speech_wav)


@pytest.fixture(scope="session")
def video_only_mp4(media_dir: Path) -> Path:
    """4 s 320x240 h264 test pattern with no audio track."""
    return media.testsrc_clip(media_dir / "video_only.mp4")


@pytest.fixture(scope="session")
def face_png(media_dir: Path) -> Path:
    """A real photograph of a smiling person (skimage's astronaut)."""
    return media.face_image(media_dir / "face.png")


@pytest.fixture(scope="session")
def face_mp4(media_dir: Path, face_png: Path, speech_wav: Path) -> Path:
    """The astronaut photo animated by a slow zoom, 512x512 25 fps, with the speech as its AAC track."""
    return media.face_clip(media_dir / "face.mp4", face_png, audio=speech_wav)


@pytest.fixture(scope="session")
def lite_pipeline():
    """The lite profile with its real models (SmolLM2, MediaPipe, FER, silero-vad, Whisper base), loaded once
    per session for every module that needs it (imported lazily: most test runs never load them)."""
    from engines.lite.pipeline import LitePipeline
    from xemo.settings import Settings

    p = LitePipeline(Settings())
    p.load()
    p.warmup()
    yield p
    p.close()


@pytest.fixture(autouse=True)
def _config_file_does_not_leak():
    """`xemo --config F` sets XEMO_CONFIG for the process (its subprocesses read it); a CLI test run in-process
    must not hand its config to every later test's Settings()."""
    before = os.environ.get("XEMO_CONFIG")
    yield
    if before is None:
        os.environ.pop("XEMO_CONFIG", None)
    else:
        os.environ["XEMO_CONFIG"] = before
