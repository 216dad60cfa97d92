"""bench/gpu_xemogpt.py at tiny size on CPU, run as a subprocess the way a GPU session runs it at full size.

Both paths must produce tokens and the JSON must carry what the GPU profile reports (time to label, tokens/s,
requests/s, peak memory, the machine), so the script's first GPU run is not its first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_xemogpt.py"


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu_bench_clips")


def bench(out: Path, clip_cache: Path, *extra: str, check: bool = True) -> tuple[dict[str, Any], str]:
    cmd = [sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu", "--max-new-tokens", "6",
           "--clips", "2", "--clip-seconds", "3", "--concurrency", "2", "--clip-cache", str(clip_cache),
           "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr[-4000:]
        return json.loads(out.read_text()), r.stdout
    return {}, r.stderr


def positive(x: Any) -> bool:
    return isinstance(x, int | float) and x > 0


def test_both_paths_produce_tokens_and_report_the_profile(tmp_path: Path, clip_cache: Path) -> None:
    res, stdout = bench(tmp_path / "r.json", clip_cache)
    assert res["machine"]["device"] == "cpu" and res["machine"]["cpu"] and res["machine"]["torch"]
    assert [c["seconds"] for c in res["clips"]] == [3.0, 3.0]
    assert res["clips"][0]["transcript"] != res["clips"][1]["transcript"]

    rel = res["released"]
    assert rel["status"] == "ran", rel
    assert rel["decoding"] == {"num_beams": 5, "do_sample": True, "temperature": 0.3, "top_p": 0.9,
                               "max_new_tokens": 6}
    assert len(rel["requests"]) == 2
    for row in rel["requests"]:
        assert row["generated_tokens"] >= 1 and positive(row["time_to_label_s"])
        assert row["prompt_tokens_video"] == 16
        assert 140 <= row["prompt_tokens_audio"] <= 150  # 3 s at HuBERT's 50 frames/s
    s = rel["summary"]
    assert all(positive(s[k]) for k in ("time_to_label_s_p50", "tokens_per_s", "requests_per_s"))
    assert positive(rel["peak_memory_bytes"]) and "RSS" in rel["peak_memory_kind"]

    ours = res["ours"]
    assert ours["status"] == "ran", ours
    assert ours["llm"]["quantization"] == "int8" and ours["front_ends"]["runtime"] == "torch"
    assert ours["single"]["completed"] == 1 and ours["concurrent"]["completed"] == 2
    for phase in ("single", "concurrent"):
        p = ours[phase]
        assert not p["errors"] and p["generated_tokens"] >= p["completed"]
        assert all(positive(p[k]) for k in ("time_to_label_s_p50", "tokens_per_s", "requests_per_s"))
        assert all(r["generated_tokens"] >= 1 for r in p["rows"])
    assert positive(ours["peak_memory_bytes"])
    assert positive(res["ratios"]["time_to_label_speedup_single"])
    assert res["budget"]["out_of_budget"] is False
    assert "released: time to label" in stdout and "ours concurrent (x2)" in stdout


@pytest.mark.slow
def test_onnx_runtime_front_ends_serve_the_same_path(tmp_path: Path, clip_cache: Path) -> None:
    res, _ = bench(tmp_path / "r.json", clip_cache, "--paths", "ours", "--front-ends", "onnx")
    fe = res["ours"]["front_ends"]
    assert fe["runtime"] == "onnx" and fe["providers"] == ["CPUExecutionProvider"]
    assert res["ours"]["status"] == "ran" and res["ours"]["concurrent"]["generated_tokens"] >= 2
    assert "released" not in res


def test_a_spent_time_budget_skips_the_work_and_says_so(tmp_path: Path, clip_cache: Path) -> None:
    res, stdout = bench(tmp_path / "r.json", clip_cache, "--time-budget-s", "0.5")
    assert res["budget"]["out_of_budget"] is True
    assert res["released"]["status"] == "skipped" and res["ours"]["status"] == "skipped"
    assert "budget" in res["released"]["reason"] and "budget" in res["ours"]["reason"]
    assert "OUT OF TIME BUDGET" in stdout


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path: Path, clip_cache: Path) -> None:
    _, stderr = bench(tmp_path / "r.json", clip_cache, "--clips", "0", check=False)
    assert "--clips" in stderr and "at least 1" in stderr
    assert not (tmp_path / "r.json").exists()
