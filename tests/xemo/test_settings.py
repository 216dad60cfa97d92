"""The one settings object: defaults, XEMO_* variables, a YAML file, precedence, errors, `xemo config --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xemo.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("XEMO_"):
            monkeypatch.delenv(k)


def test_defaults_are_the_embedded_profile_and_documented_limits() -> None:
    s = load_settings()
    assert s.profile == "lite"
    assert s.ingest.max_bytes == 50 * 1024 * 1024 and s.ingest.num_frames == 16
    assert s.server.host == "127.0.0.1" and s.server.port == 8000


def test_yaml_file_with_paths_relative_to_it_and_env_overrides(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "conf" / "xemo.yaml"
    cfg.parent.mkdir()
    cfg.write_text("profile: xemogpt\nxemogpt:\n  clip: models/clip\n  dtype: bfloat16\nserver:\n  port: 9000\n")
    monkeypatch.setenv("XEMO_SERVER__PORT", "9100")
    s = load_settings(cfg)
    assert s.profile == "xemogpt"
    assert s.xemogpt.clip == cfg.parent / "models" / "clip"
    assert s.xemogpt.dtype == "bfloat16"
    assert s.server.port == 9100  # the environment wins over the file


def test_bad_values_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XEMO_INGEST__MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match=r"ingest\.max_bytes"):
        load_settings()
    monkeypatch.delenv("XEMO_INGEST__MAX_BYTES")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("servr: {port: 1}\n")
    with pytest.raises(ConfigError, match="servr"):
        load_settings(unknown)


def xemo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("XEMO_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "xemo.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=full)


def test_config_json_redacts_secrets() -> None:
    r = xemo("config", "--json", env={"XEMO_SERVER__API_KEYS": '["sk-very-secret"]'})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["server"]["api_keys"] == ["**********"]
    assert "sk-very-secret" not in r.stdout
    assert data["profile"] == "lite"


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: nonsense\n")
    r = xemo("--config", str(bad), "config", "--json")
    assert r.returncode == 2
    assert "profile" in r.stderr and "Traceback" not in r.stderr


def test_loading_a_file_leaves_the_environment_alone(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("server: {port: 9300}\n")
    assert load_settings(cfg).server.port == 9300
    assert "XEMO_CONFIG" not in os.environ
    assert load_settings().server.port == 8000
