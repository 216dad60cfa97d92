"""`ingest()`: from uploaded bytes or a path to a Clip, safely.

In this process: the byte limit, magic-byte detection, hashing, and a private copy of the upload. Everything that
touches a demuxer or decoder (probing, the other limits, decoding) happens in a warm worker process under a hard
timeout (engines/ingest/pool.py), and the frames and audio come back as .npy files in the private directory.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engines import errors
from engines.ingest.formats import HEAD_BYTES, detect_format
from engines.ingest.pool import WorkerCrashed, get_pool
from engines.types import AudioInfo, Clip, VideoInfo
from xemo.settings import IngestSettings

Media = bytes | bytearray | memoryview | Path | str


def _read(data: Media, settings: IngestSettings, what: str) -> bytes:
    """The upload's bytes, refusing anything over the byte limit before reading it all."""
    limit = settings.max_bytes
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        path = Path(data)
        if not path.is_file():
            raise errors.BadRequest(f"the {what} file was not found or is not a regular file")
        size = path.stat().st_size
        if size > limit:
            raise _too_large(size, limit, what)
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    if len(raw) > limit:
        raise _too_large(len(raw), limit, what)
    return raw


def _too_large(size: int, limit: int, what: str) -> errors.TooLarge:
    return errors.TooLarge(
        f"the {what} upload is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB: "
        "trim or re-encode it and upload again"
    )


def content_hash(video: bytes | None, audio: bytes | None) -> str:
    """sha256 over both inputs, each tagged so (video=a, audio=b) never collides with (video=ab)."""
    h = hashlib.sha256()
    for tag, raw in ((b"video", video), (b"audio", audio)):
        if raw is not None:
            h.update(tag + len(raw).to_bytes(8, "big"))
            h.update(raw)
    return h.hexdigest()


def warmup(settings: IngestSettings) -> None:
    """Start the decoder workers now (server startup) so the first request does not wait for them."""
    get_pool(settings.decode_workers, settings.worker_memory_mb, settings.worker_nice).wait_ready()


def ingest(video: Media | None, audio: Media | None, settings: IngestSettings) -> Clip:
    """Turn an upload (a clip, or audio only, plus an optional separate audio file) into a Clip.

    Raises the typed MediaError subclasses of engines/errors.py; never hangs past settings.decode_timeout_s.
    """
    if video is None and audio is None:
        raise errors.NoStreams("nothing was uploaded; send a video or audio file")
    vraw = _read(video, settings, "video") if video is not None else None
    araw = _read(audio, settings, "audio") if audio is not None else None
    vfmt = detect_format(vraw[:HEAD_BYTES]) if vraw is not None else None
    afmt = detect_format(araw[:HEAD_BYTES]) if araw is not None else None
    # The private directory (mode 0700) is the only place decoders read from: never a client path or URL.
    pool = get_pool(settings.decode_workers, settings.worker_memory_mb, settings.worker_nice)
    tmp = Path(tempfile.mkdtemp(prefix="job-", dir=pool.root))
    try:
        job: dict[str, Any] = {
            "dir": str(tmp),
            "settings": settings.model_dump(mode="json"),
            "decoder": settings.video_decoder,
        }
        for key, raw, fmt in (("video", vraw, vfmt), ("audio", araw, afmt)):
            if raw is None:
                continue
            path = tmp / f"{key}.{fmt}"
            with open(path, "wb") as f:
                f.write(raw)
            job[key], job[f"{key}_fmt"] = str(path), fmt
        try:
            reply = pool.run(job, settings.decode_timeout_s, wait_s=settings.decode_timeout_s)
        except WorkerCrashed:
            if job["decoder"] != "decord":
                raise
            # decord is the one known to crash on odd files; PyAV is the fallback, once, in a fresh worker
            job["decoder"] = "pyav"
            reply = pool.run(job, settings.decode_timeout_s, wait_s=settings.decode_timeout_s)
        if not reply.get("ok"):
            cls = getattr(errors, str(reply.get("type")), None)
            if not (isinstance(cls, type) and issubclass(cls, (errors.MediaError, errors.ModelError))):
                cls = errors.CorruptMedia
            raise cls(str(reply.get("message", "the file could not be decoded")))
        # Copy-on-write maps of the worker's files: no read or copy now, pages come from the page cache as used,
        # and they stay valid after the directory is removed; plain ndarray views, writable (privately).
        # Only the three known files are read, whatever the reply says: the worker is not trusted with paths.
        arrays = {
            k: np.asarray(np.load(tmp / f"{k}.npy", mmap_mode="c", allow_pickle=False))
            for k in _ARRAYS
            if k in reply["arrays"]
        }
        return _clip(reply["meta"], arrays, content_hash(vraw, araw))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_ARRAYS = ("frames", "timeline", "audio")


def _clip(meta: dict[str, Any], arrays: dict[str, np.ndarray], sha: str) -> Clip:
    return Clip(
        container=meta["container"],
        duration_s=float(meta["duration_s"]),
        video=VideoInfo(**meta["video"]) if meta.get("video") else None,
        audio_info=AudioInfo(**meta["audio"]) if meta.get("audio") else None,
        frames=arrays.get("frames"),
        frame_times=list(meta.get("frame_times", [])),
        audio=arrays.get("audio"),
        timeline=arrays.get("timeline"),
        timeline_times=list(meta.get("timeline_times", [])),
        sha256=sha,
        # the worker is not trusted: only the known sub-stages, as non-negative floats
        timings={
            k: float(v)
            for k, v in (meta["timings"] if isinstance(meta.get("timings"), dict) else {}).items()
            if k in INGEST_STAGES and isinstance(v, int | float) and 0 <= v < 1e6
        },
    )


INGEST_STAGES = ("demux", "video_decode", "audio_decode")


__all__ = ["ingest", "warmup", "content_hash"]
