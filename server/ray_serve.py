"""`xemo serve --ray`: start (or join) Ray, run the Serve application of server/ray_app.py, stop on a signal.

With `ray.address` unset this process starts a local Ray bound to 127.0.0.1 and, on SIGTERM/SIGINT, shuts
Serve down (the ingress replicas get `drain_timeout_s` to finish requests in flight) and then every Ray process
it started. With `ray.address` set it joins that cluster and, on a signal, deletes only its own application.
Serve's HTTP proxy runs on the head node only, on `host:port`. The exit code is 0 after a signal, 1 when the
application failed to start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from xemo.settings import Settings

log = logging.getLogger("xemo.server")

ROOT = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    """A signal arrived while the application was still starting."""


def serve_until_signalled(settings: Settings, host: str, port: int) -> int:
    r = settings.ray
    started_ray = r.address is None
    if started_ray:
        # Workers of a Ray started here import this checkout's packages, also when it is not pip-installed.
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

    stop = threading.Event()
    serving = False

    def on_signal(sig: int, frame: FrameType | None) -> None:
        stop.set()
        if not serving:
            raise _Stop

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    import ray
    from ray import serve

    from server.ray_app import build_app  # first: it sets the environment Ray reads when it is imported

    code = 0
    try:
        if started_ray:
            ray.init(num_cpus=r.num_cpus, object_store_memory=r.object_store_mb * 1024 * 1024,
                     include_dashboard=False, _node_ip_address="127.0.0.1", namespace="xemo")
        else:
            ray.init(address=r.address, namespace="xemo")
        for s in previous:  # ray.init installs a fatal-signal handler that would kill this process at once
            signal.signal(s, on_signal)
        serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        serve.run(build_app(settings), name=r.app_name, route_prefix="/", blocking=False)
        serving = True
        log.info("ray serve application running", extra={"app": r.app_name, "host": host, "port": port,
                                                          "started_ray": started_ray})
        while not stop.wait(1.0):
            pass
        log.info("signal received: stopping the ray serve application", extra={"app": r.app_name})
    except _Stop:
        log.info("signal received while starting: stopping")
    except Exception as e:
        log.error("the ray serve application failed", exc_info=e)
        code = 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _shutdown(started_ray, r.app_name)
    return code


def _shutdown(started_ray: bool, app_name: str) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():  # serve.shutdown() without a connection would start a new local Ray
        return
    try:
        if started_ray:
            serve.shutdown()
        else:
            serve.delete(app_name)
    except Exception as e:  # still shut Ray down below
        log.error("stopping ray serve failed", exc_info=e)
    finally:
        ray.shutdown()
