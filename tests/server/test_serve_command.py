"""`xemo serve` hands every server knob from the settings to uvicorn."""

from __future__ import annotations

from xemo.commands.serve import uvicorn_kwargs
from xemo.settings import load_settings


def test_every_uvicorn_knob_comes_from_settings() -> None:
    s = load_settings(
        None,
        server={
            "host": "0.0.0.0",
            "port": 9123,
            "workers": 3,
            "timeout_keep_alive_s": 7,
            "limit_concurrency": 50,
            "backlog": 99,
            "ws_max_frame_bytes": 1234,
            "ws_ping_interval_s": 11,
            "drain_timeout_s": 12,
        },
        log_level="DEBUG",
    )
    kw = uvicorn_kwargs(s, None, None)
    assert (kw["host"], kw["port"], kw["workers"]) == ("0.0.0.0", 9123, 3)
    assert (kw["timeout_keep_alive"], kw["limit_concurrency"], kw["backlog"]) == (7, 50, 99)
    assert (kw["ws_max_size"], kw["ws_ping_interval"], kw["timeout_graceful_shutdown"]) == (1234, 11, 12)
    assert kw["log_level"] == "debug" and kw["access_log"] is False
    # the CLI's --host/--port win over the settings
    kw = uvicorn_kwargs(s, "127.0.0.1", 0)
    assert (kw["host"], kw["port"]) == ("127.0.0.1", 0)
