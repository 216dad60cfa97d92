"""The runtime switch end to end: `xemo analyze --config` with export.runtime onnx gives the torch answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _analyze(config: Path, clip: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("XEMO_CONFIG", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xemo.cli",
            "--config",
            str(config),
            "analyze",
            str(clip),
            "--transcript",
            "I cannot believe you did this again.",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_onnx_runtime_answers_like_torch(tiny: dict, exported: Path, testsrc_mp4: Path, tmp_path: Path) -> None:
    base = yaml.safe_load(Path(tiny["config"]).read_text())
    configs = {}
    for runtime in ("torch", "onnx"):
        cfg = {**base, "export": {"runtime": runtime, "dir": str(exported)}}
        configs[runtime] = tmp_path / f"{runtime}.yaml"
        configs[runtime].write_text(yaml.safe_dump(cfg))
    torch_answer = _analyze(configs["torch"], testsrc_mp4)
    onnx_answer = _analyze(configs["onnx"], testsrc_mp4)
    assert "(onnx)" in onnx_answer["model"] and "(torch)" in torch_answer["model"]
    assert onnx_answer["usage"] == torch_answer["usage"]
    assert onnx_answer["usage"]["prompt_tokens_video"] == 16 and onnx_answer["usage"]["prompt_tokens_audio"] > 0
    assert onnx_answer["usage"]["generated_tokens"] > 0
    # greedy decoding over front-end tokens within 1e-5 of each other: the same label and the same text
    assert onnx_answer["emotion"]["label"] == torch_answer["emotion"]["label"]
    for k, p in torch_answer["emotion"]["scores"].items():
        assert abs(onnx_answer["emotion"]["scores"][k] - p) < 1e-3
    assert onnx_answer["explanation"] == torch_answer["explanation"]


def test_broken_artefacts_fail_analyze_with_a_clear_error(tiny: dict, tmp_path: Path, testsrc_mp4: Path) -> None:
    base = yaml.safe_load(Path(tiny["config"]).read_text())
    cfg = tmp_path / "onnx.yaml"
    cfg.write_text(yaml.safe_dump({**base, "export": {"runtime": "onnx", "dir": str(tmp_path / "nothing")}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("XEMO_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "xemo.cli", "--config", str(cfg), "analyze", str(testsrc_mp4)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())  # the console wraps long lines
    assert "artifact_error" in err and "no manifest.json" in err and "xemo export" in err
    assert "Traceback" not in err
