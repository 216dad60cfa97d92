"""`xemo probe`: what ingest sees, as JSON or readable text; bad media is one line on stderr and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import media
import pytest
from typer.testing import CliRunner

from xemo.cli import app

SAMPLE = media.SAMPLES / "sample_00000007.mp4"


def probe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["probe", *args], env=env)
    return r.exit_code, r.stdout, r.stderr


RESEARCH = {"XEMO_PROFILE": "xemogpt"}  # the profile that decodes the paper's 16 uniform frames


def test_probe_json(testsrc_mp4: Path) -> None:
    code, out, _ = probe(str(testsrc_mp4), "--json")
    assert code == 0
    d = json.loads(out)
    assert d["container"] == "mp4" and d["duration_s"] == pytest.approx(4.0, abs=0.05)
    assert d["video"] == {"width": 320, "height": 240, "fps": 25.0, "frames": 100, "codec": "h264", "rotation": 0}
    assert d["audio"]["sample_rate"] == 16000 and d["audio"]["channels"] == 1
    assert d["audio"]["source_channels"] == 1 and d["audio"]["source_sample_rate"] == 16000
    # the lite default perceives the 4 fps timeline alone, so the uniform frames are not decoded
    assert d["frame_times"] == [] and d["timeline_frames"] == 15
    research = json.loads(probe(str(testsrc_mp4), "--json", env=RESEARCH)[1])
    assert len(research["frame_times"]) == 16 and research["frame_times"][0] == 0.0


def test_probe_readable_with_separate_audio(video_only_mp4: Path, speech_wav: Path) -> None:
    code, out, _ = probe(str(video_only_mp4), "--audio", str(speech_wav), env=RESEARCH)
    assert code == 0
    assert "320x240 h264" in out and "pcm_s16le 1 ch 16000 Hz -> mono 16000 Hz" in out and "frames      16 at" in out
    lite = probe(str(video_only_mp4), "--audio", str(speech_wav))[1]
    assert "frames      none uniform (this profile decodes only the timeline)" in lite and "timeline    15" in lite


def test_probe_audio_only_has_no_video(speech_wav: Path) -> None:
    d = json.loads(probe(str(speech_wav), "--json")[1])
    assert d["video"] is None and d["frame_times"] == [] and d["audio"]["seconds"] > 1


def test_probe_bad_media_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all, just text renamed to .mp4\n")
    code, out, err = probe(str(bad), "--json")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("error (unsupported_format):")
    assert "Traceback" not in err


@pytest.mark.skipif(not SAMPLE.exists(), reason="../shared/samples is not present")
def test_probe_shared_sample() -> None:
    d = json.loads(probe(str(SAMPLE), "--json", env=RESEARCH)[1])
    assert len(d["frame_times"]) == 16 and d["audio"]["sample_rate"] == 16000 and d["audio"]["channels"] == 1
    assert d["audio"]["source_channels"] == 2  # the clip's own stereo AAC track, downmixed
    assert d["duration_s"] == pytest.approx(4.64, abs=0.02)
