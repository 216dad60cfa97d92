"""Hostile and broken uploads: each gives its typed error, none hangs or crashes the calling process.

Every call runs with a 10 s decode budget, so a hang would surface as DecodeTimeout instead of the expected
error; the decoders' memory is capped in their own process. The last tests freeze and kill real worker
processes to check that a hung or crashing decoder costs one request, not the server.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import media
import pytest

from engines.errors import (
    CorruptMedia,
    DecodeTimeout,
    MediaError,
    NoStreams,
    TooLarge,
    TooLong,
    TooManyPixels,
    UnsupportedFormat,
)
from engines.ingest import ingest
from engines.ingest.pool import get_pool
from xemo.settings import IngestSettings


def settings(**kw: object) -> IngestSettings:
    return IngestSettings(**{"decode_timeout_s": 10.0, **kw})


@pytest.fixture(scope="session")
def base_mp4(media_dir: Path) -> bytes:
    """A valid 3 s clip (h264 + aac) whose moov atom sits at the end, as FFmpeg writes it by default."""
    out = media_dir / "hostile_base.mp4"
    media.ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=d=3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(out),
    )
    return out.read_bytes()


@pytest.fixture(scope="session")
def secret_file(media_dir: Path) -> Path:
    p = media_dir / "secret.txt"
    p.write_text("TOP-SECRET-LOCAL-FILE\n")
    return p


def test_zero_bytes() -> None:
    with pytest.raises(UnsupportedFormat, match="empty"):
        ingest(b"", None, settings())


def test_text_renamed_mp4(media_dir: Path) -> None:
    p = media_dir / "notes.mp4"
    p.write_text("These are my meeting notes, not a video. " * 20)
    with pytest.raises(UnsupportedFormat, match="unrecognised"):
        ingest(p, None, settings())


def test_wrong_magic(base_mp4: bytes) -> None:
    broken = b"\x00\x00\x00\x20xxxx" + base_mp4[8:]  # the ftyp box renamed: a real mp4 body, no magic
    with pytest.raises(UnsupportedFormat):
        ingest(broken, None, settings())


def test_truncated(base_mp4: bytes) -> None:
    with pytest.raises(CorruptMedia, match="truncated or damaged"):
        ingest(base_mp4[: len(base_mp4) // 2], None, settings())


def test_bit_flipped_header(base_mp4: bytes) -> None:
    flipped = bytearray(base_mp4)
    moov = base_mp4.find(b"moov")
    for i in range(moov + 8, moov + 200, 7):
        flipped[i] ^= 0xFF
    with pytest.raises((CorruptMedia, NoStreams)):
        ingest(bytes(flipped), None, settings())


@pytest.mark.parametrize("seed", range(4))
def test_random_bit_flips_give_a_clip_or_a_typed_error(base_mp4: bytes, seed: int) -> None:
    rng = random.Random(seed)
    flipped = bytearray(base_mp4)
    for _ in range(40):
        flipped[rng.randrange(64, len(flipped))] ^= 1 << rng.randrange(8)
    try:
        clip = ingest(bytes(flipped), None, settings())
    except MediaError as e:
        assert not isinstance(e, DecodeTimeout)
        assert "/" not in e.message.replace("mp4/mov", "")  # no paths leak into user messages
    else:
        assert clip.frames is not None or clip.audio is not None


def test_hls_playlist_pointing_at_a_local_file(media_dir: Path, secret_file: Path) -> None:
    m3u8 = media_dir / "playlist.mp4"
    m3u8.write_text(f"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile://{secret_file}\n#EXT-X-ENDLIST\n")
    with pytest.raises(UnsupportedFormat):
        ingest(m3u8, None, settings())


def test_concat_script_pointing_at_a_local_file(media_dir: Path, secret_file: Path, video_only_mp4: Path) -> None:
    script = f"ffconcat version 1.0\nfile '{video_only_mp4}'\nfile '{secret_file}'\n".encode()
    with pytest.raises(UnsupportedFormat):
        ingest(script, None, settings())


def test_huge_dimension_frame(media_dir: Path) -> None:
    wide = media_dir / "wide.avi"
    media.ffmpeg("-f", "lavfi", "-i", "color=c=black:s=5000x300:r=25", "-frames:v", "1", "-c:v", "mjpeg", str(wide))
    with pytest.raises(TooManyPixels, match="5000x300"):
        ingest(wide, None, settings())
    # within 4096x4096 but over the pixel budget
    with pytest.raises(TooManyPixels, match="MP per frame"):
        ingest(wide.read_bytes(), None, settings(max_width=8192, max_pixels=1_000_000))


@pytest.fixture(scope="session")
def long_clip(media_dir: Path) -> Path:
    """70 s at 1 fps and 64x64 with a 70 s audio track: longer than the 60 s default limit, yet tiny."""
    out = media_dir / "long.mkv"
    media.ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=1:duration=70",
        "-f",
        "lavfi",
        "-i",
        "sine=d=70:sample_rate=8000",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "libopus",
        str(out),
    )
    return out


def test_clip_longer_than_the_limit(long_clip: Path) -> None:
    with pytest.raises(TooLong, match="limit is 60 s"):
        ingest(long_clip, None, settings())


def test_audio_longer_than_the_limit(speech_wav: Path, video_only_mp4: Path) -> None:
    with pytest.raises(TooLong, match="audio"):
        ingest(speech_wav, None, settings(max_audio_s=1.0))
    with pytest.raises(TooLong, match="audio"):
        ingest(video_only_mp4, speech_wav, settings(max_audio_s=1.0))


def test_too_many_frames(media_dir: Path) -> None:
    fast = media_dir / "fast.mkv"
    media.ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=32x32:rate=500:duration=1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(fast),
    )
    with pytest.raises(TooLong, match="frames"):
        ingest(fast, None, settings(max_duration_s=2.0, max_fps=100.0))


def test_too_many_bytes(testsrc_mp4: Path) -> None:
    with pytest.raises(TooLarge, match="limit is"):
        ingest(testsrc_mp4, None, settings(max_bytes=1000))
    with pytest.raises(TooLarge):
        ingest(testsrc_mp4.read_bytes(), None, settings(max_bytes=1000))


def test_nothing_uploaded() -> None:
    with pytest.raises(NoStreams):
        ingest(None, None, settings())


# --- the decoder process itself misbehaving -------------------------------------------------------------------


def _one_worker() -> IngestSettings:
    s = settings(decode_workers=1)
    get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice).wait_ready()
    return s


def test_hung_decoder_times_out_and_is_replaced(testsrc_mp4: Path) -> None:
    s = _one_worker()
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)  # a decoder stuck holding the GIL looks exactly like this from outside
    with pytest.raises(DecodeTimeout, match="longer than 1 s"):
        ingest(testsrc_mp4, None, s.model_copy(update={"decode_timeout_s": 1.0}))
    assert pool.pids() != [pid]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung one is gone (killed and reaped)
    clip = ingest(testsrc_mp4, None, s)  # the replacement serves the next request
    assert clip.frames is not None and clip.frames.shape[0] == 16


def _wait_for_job(root: Path, clip: Path) -> None:
    """Block until a call has copied `clip` into its job directory; the pipe write follows within microseconds."""
    size = clip.stat().st_size
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(p.stat().st_size == size for p in root.glob("job-*/video.*")):
            time.sleep(0.1)
            return
        time.sleep(0.02)
    raise AssertionError("the ingest call never reached its worker")


def _crash_mid_job(clip: Path, s: IngestSettings) -> object:
    """Run one ingest while its worker is frozen, then SIGKILL the worker (a segfault, seen from outside)."""
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(ingest(clip, None, s))
        except Exception as e:
            outcome.append(e)

    t = threading.Thread(target=call)
    t.start()
    _wait_for_job(pool.root, clip)
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=30)
    assert len(outcome) == 1
    assert pool.pids() != [pid]
    return outcome[0]


def test_crashing_decoder_is_a_typed_error_and_is_replaced(testsrc_mp4: Path) -> None:
    s = _one_worker().model_copy(update={"video_decoder": "pyav"})
    err = _crash_mid_job(testsrc_mp4, s)
    assert isinstance(err, CorruptMedia) and "crashed" in err.message
    assert ingest(testsrc_mp4, None, s).frames is not None


def test_decord_crash_falls_back_to_pyav(testsrc_mp4: Path) -> None:
    s = _one_worker().model_copy(update={"video_decoder": "decord"})
    clip = _crash_mid_job(testsrc_mp4, s)
    assert not isinstance(clip, Exception), clip
    assert clip.frames is not None and clip.frames.shape[0] == 16  # type: ignore[attr-defined]


def test_worker_killed_while_idle_is_replaced_transparently(testsrc_mp4: Path) -> None:
    s = _one_worker()
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert ingest(testsrc_mp4, None, s).frames is not None
    assert pool.pids() != [pid]


def test_decoder_memory_is_capped(media_dir: Path) -> None:
    hd = media.testsrc_clip(media_dir / "hostile_hd.mp4", seconds=2.0, size="1280x720", extra=["-preset", "ultrafast"])
    # A cap just above a warm worker's address space: decoding 720p cannot fit, and must fail cleanly.
    fresh = get_pool(1, 4095)  # its own never-used worker: the footprint of imports alone
    fresh.wait_ready()
    [pid] = fresh.pids()
    status = Path(f"/proc/{pid}/status").read_text()
    footprint_mb = int(status.split("VmSize:")[1].split()[0]) // 1024
    with pytest.raises((TooLarge, CorruptMedia)):
        ingest(hd, None, settings(decode_workers=1, worker_memory_mb=footprint_mb + 40, video_decoder="pyav"))
    assert ingest(hd, None, settings()).frames is not None  # default cap: fine


def test_workers_outlive_the_thread_that_started_them(testsrc_mp4: Path) -> None:
    # Linux ties PR_SET_PDEATHSIG to the forking thread; request threads come and go, the workers must not.
    s = settings(decode_workers=1, worker_memory_mb=4000)  # a fresh pool, created inside the thread below
    t = threading.Thread(target=lambda: ingest(testsrc_mp4, None, s))
    t.start()
    t.join(timeout=30)
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    pids = pool.pids()
    time.sleep(0.3)
    assert pool.alive() == [True]
    assert ingest(testsrc_mp4, None, s).frames is not None
    assert get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice).pids() == pids  # served without a respawn


def test_concurrent_calls_share_the_pool(testsrc_mp4: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s = settings()
    with ThreadPoolExecutor(4) as ex:
        clips = list(ex.map(lambda _: ingest(testsrc_mp4, None, s), range(4)))
    assert len({c.sha256 for c in clips}) == 1
    for c in clips[1:]:
        assert c.frames is not None and clips[0].frames is not None
        assert (c.frames == clips[0].frames).all()


def test_workers_are_recycled_to_contain_leaks(testsrc_mp4: Path) -> None:
    s = _one_worker()
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    [worker] = pool._all
    worker.jobs, worker.max_jobs = 0, 2
    try:
        [pid] = pool.pids()
        ingest(testsrc_mp4, None, s)
        assert pool.pids() == [pid]
        ingest(testsrc_mp4, None, s)  # the second job retires it
        assert pool.pids() != [pid]
        assert ingest(testsrc_mp4, None, s).frames is not None
    finally:
        worker.max_jobs = 500


def test_worker_cannot_read_files_outside_its_job_root(speech_wav: Path) -> None:
    import shutil

    s = _one_worker()
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    if not all(pool.sandboxed()):
        pytest.skip("this kernel has no Landlock; workers run unjailed (still isolated by process)")
    jobdir = Path(tempfile.mkdtemp(dir=pool.root))
    job = {"dir": str(jobdir), "settings": s.model_dump(mode="json"), "decoder": "pyav", "video_fmt": "wav"}
    # as if a container (or an exploited decoder) reached for a file elsewhere: a perfectly valid wav
    outside = pool.run({**job, "video": str(speech_wav)}, 10.0, 10.0)
    assert not outside["ok"] and outside["type"] == "CorruptMedia" and "Permission denied" in outside["message"]
    inside = jobdir / "copy.wav"
    shutil.copy(speech_wav, inside)
    try:
        assert pool.run({**job, "video": str(inside)}, 10.0, 10.0)["ok"]
    finally:
        shutil.rmtree(jobdir)


def test_all_decoders_busy_is_overloaded_not_a_pileup(testsrc_mp4: Path) -> None:
    from engines.errors import Overloaded

    s = _one_worker()
    pool = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)  # the only worker is stuck on someone else's upload
    holder = threading.Thread(
        target=lambda: pytest.raises(
            DecodeTimeout, ingest, testsrc_mp4, None, s.model_copy(update={"decode_timeout_s": 3.0})
        )
    )
    holder.start()
    _wait_for_job(pool.root, testsrc_mp4)
    with pytest.raises(Overloaded, match="busy"):
        ingest(testsrc_mp4, None, s.model_copy(update={"decode_timeout_s": 0.5}))
    holder.join(timeout=30)
    assert ingest(testsrc_mp4, None, s).frames is not None


def test_worker_first_used_long_after_it_started_is_still_ready() -> None:
    """A worker whose ready line has waited in the pipe past the startup deadline (the server was busy loading
    models) is ready, not reported as failed to start."""
    import select

    from engines.ingest.pool import STARTUP_TIMEOUT_S, DecoderWorker

    root = Path(tempfile.mkdtemp(prefix="xemo-ingest-test-"))
    w = DecoderWorker(1024, root)
    try:
        ready, _, _ = select.select([w._rx], [], [], STARTUP_TIMEOUT_S)
        assert ready, "the worker never started"
        w.started -= 2 * STARTUP_TIMEOUT_S  # as if it had started long ago
        w.wait_ready()
        assert w.proc is not None and w.proc.poll() is None
    finally:
        w.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_decoders_run_at_their_nice_value_every_thread_of_them(testsrc_mp4: Path) -> None:
    s = settings(decode_workers=1, worker_nice=13)
    clip = ingest(testsrc_mp4, None, s)  # FFmpeg's frame threads and the audio thread have started by now
    assert clip.frames is not None
    [pid] = get_pool(s.decode_workers, s.worker_memory_mb, s.worker_nice).pids()
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    assert len(tasks) >= 2
    nice = {int(t.name): int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks}
    assert set(nice.values()) == {13}, nice
    assert os.getpriority(os.PRIO_PROCESS, 0) < 13  # this process keeps its own
