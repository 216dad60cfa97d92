"""`xemo serve`: run the server under uvicorn with every knob from settings.server.

One worker (the default) runs in this process with a SIGTERM drain: `/readyz` turns 503, new requests get 503,
requests in flight finish within `drain_timeout_s`, then the process exits 0. With several workers uvicorn's
supervisor runs `server.app:create_app_from_env` in each and uses uvicorn's own graceful shutdown (it stops
accepting connections at once, then lets requests in flight finish within `drain_timeout_s`).
`--ray` runs the same app as a Ray Serve application instead (server/ray_serve.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

import uvicorn

from xemo.commands.preflight import preflight
from xemo.settings import Settings

log = logging.getLogger("xemo.server")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains before the usual graceful shutdown (a second forces it)."""

    def __init__(self, config: uvicorn.Config, state: Any, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout_s = drain_timeout_s
        self._draining = False
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown and the exit code would
        # be 128+15 instead of the clean 0 a drained shutdown deserves.
        if self._draining or self.state is None:
            self.should_exit = True
            if self._draining and sig == signal.SIGINT:
                self.force_exit = True
            return
        self._draining = True
        loop = asyncio.get_event_loop()

        def start() -> None:
            self._drain_task = loop.create_task(self._drain())  # keep a reference: tasks are weakly held

        loop.call_soon_threadsafe(start)

    async def _drain(self) -> None:
        await self.state.drain(self.drain_timeout_s)
        self.should_exit = True


def uvicorn_kwargs(settings: Settings, host: str | None, port: int | None) -> dict[str, Any]:
    s = settings.server
    return {
        "host": host or s.host,
        "port": port if port is not None else s.port,
        "workers": s.workers,
        "timeout_keep_alive": int(s.timeout_keep_alive_s),
        "limit_concurrency": s.limit_concurrency,
        "backlog": s.backlog,
        "ws_max_size": s.ws_max_frame_bytes,
        "ws_ping_interval": s.ws_ping_interval_s,
        "ws_ping_timeout": s.ws_ping_interval_s,
        # after the drain, connections still open get this long before uvicorn cancels them
        "timeout_graceful_shutdown": max(1, int(s.drain_timeout_s)),
        "log_level": settings.log_level.lower(),
        "log_config": None,  # our JSON logging (server/logging.py)
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
    }


def run(settings: Settings, host: str | None, port: int | None) -> int:
    from server import logging as xlog

    if rc := preflight(settings):
        return rc
    xlog.configure(settings.log_level, settings.server.log_json)
    kwargs = uvicorn_kwargs(settings, host, port)
    if settings.server.workers > 1:
        uvicorn.run("server.app:create_app_from_env", factory=True, **kwargs)
        return 0
    from server.app import create_app

    app = create_app(settings)
    kwargs.pop("workers")
    config = uvicorn.Config(app, **kwargs)
    server = DrainingServer(config, app.state.xemo, settings.server.drain_timeout_s)
    server.run()
    return 0


def run_ray(settings: Settings, host: str | None, port: int | None) -> int:
    from server import logging as xlog

    if rc := preflight(settings):  # this machine is where a local Ray runs the LLM replica
        return rc
    xlog.configure(settings.log_level, settings.server.log_json)
    try:
        from server.ray_serve import serve_until_signalled
    except ImportError as e:
        log.error("`xemo serve --ray` needs Ray Serve: pip install '.[ray]'", extra={"error": str(e)})
        return 2
    return serve_until_signalled(settings, host or settings.server.host, settings.server.port if port is None else port)
