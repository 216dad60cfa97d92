"""A real `xemo serve` process on a free 127.0.0.1 port, configured through XEMO_* environment variables.

Shared by the server, eval and bench code (a plain module, not a conftest, so its name cannot clash)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
        for inherited in ("XEMO_CONFIG", "XEMO_SERVER__API_KEYS"):  # only what the caller sets applies
            if inherited not in env:
                full_env.pop(inherited, None)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xemo.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *(args or [])],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return
                if "load_error" in r.json():  # it stays up to report why, but will never be ready
                    raise RuntimeError(f"model loading failed: {r.json()['load_error']}")
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def read_reply(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends on a raw socket until it closes it (or `timeout` seconds pass)."""
    s.settimeout(timeout)
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except OSError:
        pass
    s.close()
    return reply


def start_server(tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str],
                 args: list[str] | None = None, ready_timeout: float = 240.0) -> ServerProcess:
    log = tmp_path_factory.mktemp("server") / f"{name}.log"
    for attempt in range(2):  # a free port can be taken by someone else between probing and binding: once more
        srv = ServerProcess(env, log, args)
        try:
            srv.wait_ready(ready_timeout)
            return srv
        except RuntimeError:
            srv.stop()
            if attempt:
                raise
    raise AssertionError("unreachable")


class RedisProcess:
    """A private redis-server on a free 127.0.0.1 port (no persistence), which a test may kill and restart."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
