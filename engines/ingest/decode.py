"""Probe, check the budgets, then decode one upload. Runs inside a decoder worker process (engines/ingest/worker.py).

Order matters: every limit that can be read from the container (duration, size, frame count, audio seconds) is
checked before any frame is decoded, and the limits that only the packets reveal (real frame count and span)
are checked after a packet scan but still before decoding pictures. decord reads video (the authors' decoder);
PyAV demuxes, extracts audio, and decodes video when decord is not asked for or cannot read the file.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from engines.errors import CorruptMedia, MediaError, NoStreams, TooLarge, TooLong, TooManyPixels
from engines.ingest import sampling
from engines.ingest.formats import AUDIO_ONLY, DEMUXER_OPTIONS, DEMUXERS, SAFE_OPTIONS
from engines.types import AudioInfo, VideoInfo
from xemo.settings import IngestSettings

Arrays = dict[str, np.ndarray]


def open_container(path: str, fmt: str, what: str) -> av.container.InputContainer:
    """Open with the demuxer forced by the detected format, local-file protocol only."""
    demuxer = DEMUXERS[fmt]
    options = {**SAFE_OPTIONS, **DEMUXER_OPTIONS.get(demuxer, {})}
    try:
        return av.open(path, mode="r", format=demuxer, container_options=options, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise CorruptMedia(
            f"the {what} file could not be opened as {fmt} ({_reason(e)}); "
            "it may be truncated or damaged: re-export it and upload again"
        ) from None


def _reason(e: Exception) -> str:
    # FFmpeg errors carry the file name in str(e); strerror is the part without paths
    return (getattr(e, "strerror", None) or type(e).__name__).rstrip(".")


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None or value <= 0:
        return None
    return float(value * time_base)


def _video_stream(c: av.container.InputContainer, fmt: str) -> av.VideoStream | None:
    if fmt in AUDIO_ONLY:
        return None  # cover art in mp3/flac/ogg is not a video
    for s in c.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    return None


def check_video_stream(s: av.VideoStream, cs: IngestSettings) -> None:
    _check_size(s.codec_context.width, s.codec_context.height, cs)
    _check_duration(_seconds(s.duration, s.time_base), cs.max_duration_s, "video")
    _check_frame_count(s.frames or 0, cs)


def _check_size(w: int, h: int, cs: IngestSettings) -> None:
    if w <= 0 or h <= 0:
        raise CorruptMedia("the video stream has no picture size; the file is damaged: re-export it")
    if w > cs.max_width or h > cs.max_height:
        raise TooManyPixels(
            f"the video is {w}x{h} pixels; the limit is {cs.max_width}x{cs.max_height}: "
            "downscale it (e.g. to 1280x720) and upload again"
        )
    if w * h > cs.max_pixels:
        raise TooManyPixels(
            f"the video has {w * h / 1e6:.1f} MP per frame; the limit is "
            f"{cs.max_pixels / 1e6:.1f} MP: downscale it (e.g. to 1280x720) and upload again"
        )


def _check_duration(seconds: float | None, limit: float, what: str) -> None:
    if seconds is not None and seconds > limit:
        raise TooLong(f"the {what} is {seconds:.1f} s long; the limit is {limit:g} s: trim it and upload again")


def _check_frame_count(frames: int, cs: IngestSettings) -> None:
    limit = int(cs.max_duration_s * cs.max_fps)
    if frames > limit:
        raise TooLong(
            f"the video has {frames} frames; the limit is {limit} ({cs.max_duration_s:g} s at "
            f"{cs.max_fps:g} fps): trim it or lower its frame rate"
        )


@dataclass
class Scan:
    """What one demux pass of the video stream learnt, and where its decoder stands, to decode on from there."""

    times: np.ndarray  # presentation times (s) of every packet, sorted, from the first frame
    rotation: int  # display rotation (degrees counter-clockwise) of the first picture
    start: float  # the first frame's own presentation time (s)
    nearest: bool  # the decoder skips what a timeline-only decode may skip (configure_decoder)
    early: list[av.VideoFrame] = field(default_factory=list)  # pictures decoded while scanning, in order
    rest: list[av.Packet] = field(default_factory=list)  # packets after the last one the scan decoded
    flushed: bool = False  # the scan already drained the decoder


def configure_decoder(s: av.VideoStream, nearest: bool) -> None:
    """Before the first decode: frame threads, and with the timeline alone (nearest frames), no non-reference
    frames (no other frame needs them, so nothing else changes) and no deblocking: H.264 decodes 10-15 % cheaper,
    and on real clips the frames stay at 38 dB PSNR or more from the filtered ones at the perceived size, a
    difference face geometry does not read."""
    s.thread_type = "AUTO"
    if nearest:
        s.codec_context.skip_frame = "NONREF"
        s.codec_context.options = {"skip_loop_filter": "all"}


def scan_video_times(
    c: av.container.InputContainer, s: av.VideoStream, cs: IngestSettings, nearest: bool = False
) -> Scan:
    """One demux pass: presentation times of every video packet, the display rotation from the first decoded
    picture, which also proves the stream decodes, and the first frame's own presentation time. The packets and
    the decoder's state are kept, so decoding goes on from there without a second pass over the file.
    Only the packets up to the first picture are decoded; the frame-count limit is enforced while scanning."""
    configure_decoder(s, nearest)
    limit = int(cs.max_duration_s * cs.max_fps)
    pts: list[int] = []
    early: list[av.VideoFrame] = []
    rest: list[av.Packet] = []
    for pkt in c.demux(s):
        if pkt.size == 0:
            continue  # flush packet
        t = pkt.pts if pkt.pts is not None else pkt.dts
        if t is None:
            t = (pts[-1] + 1) if pts else 0
        pts.append(t)
        if len(pts) > limit:
            _check_frame_count(len(pts), cs)
        if early:
            rest.append(pkt)
            continue
        for frame in s.codec_context.decode(pkt):
            _check_size(frame.width, frame.height, cs)  # the bitstream may disagree with the container
            early.append(frame)
    flushed = False
    if not early and pts:
        flushed = True
        for frame in _drain(s):  # a decoder with reorder delay
            _check_size(frame.width, frame.height, cs)
            early.append(frame)
    if not early:
        raise CorruptMedia("no picture could be decoded from the video stream; the file is damaged: re-export it")
    times = np.sort(np.asarray(pts, dtype=np.float64)) * float(s.time_base or Fraction(1, 1))
    start = float(times[0]) if len(times) else 0.0
    return Scan(times - start, int(early[0].rotation or 0), start, nearest, early, rest, flushed)


def _scanned_frames(s: av.VideoStream, scan: Scan) -> Iterator[av.VideoFrame]:
    """The stream's pictures in presentation order, decoding on where the scan stopped."""
    yield from scan.early
    for pkt in scan.rest:
        yield from s.codec_context.decode(pkt)
    if not scan.flushed:
        yield from _drain(s)


def _drain(s: av.VideoStream) -> list[av.VideoFrame]:
    """The decoder's last pictures. The empty packet that flushes it carries the stream's time base, as the
    demuxer's own does, so those pictures have one too (PyAV leaves it unset after a bare flush)."""
    flush = av.Packet()
    flush.time_base = s.time_base
    return s.codec_context.decode(flush)


def _reopened_frames(path: str, fmt: str, nearest: bool) -> Iterator[av.VideoFrame]:
    """The stream's pictures from a second pass over the file, for a decode the scan's decoder was not set up for."""
    with open_container(path, fmt, "video") as c:
        s = _video_stream(c, fmt)
        configure_decoder(s, nearest)
        yield from c.decode(s)


def _check_times(times: np.ndarray, cs: IngestSettings) -> None:
    if len(times) == 0:
        raise CorruptMedia("the video stream holds no frames; the file is damaged: re-export it")
    _check_frame_count(len(times), cs)
    _check_duration(float(times[-1] - times[0]), cs.max_duration_s, "video")


def _select(times: np.ndarray, cs: IngestSettings) -> tuple[np.ndarray, np.ndarray]:
    n = min(cs.num_frames, cs.max_decoded_frames)
    timeline = sampling.timeline_indices(times, cs.timeline_fps, cs.max_decoded_frames - n)
    if cs.uniform_frames is False and len(timeline):
        return np.zeros(0, dtype=np.int64), timeline  # the profile perceives the timeline only
    return sampling.uniform_indices(times, n), timeline


def _rot90(img: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


class DecordDisagrees(Exception):
    """decord's frame index differs from the packets PyAV counted; its known deadlock starts like this."""


def decode_video_decord(
    path: str, expected_frames: int, out_wh: tuple[int, int], cs: IngestSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """decord: frame times from its index, frames by index, scaled (and rotated) inside FFmpeg."""
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), width=out_wh[0], height=out_wh[1], num_threads=0)
    n = len(vr)
    if n != expected_frames:  # an over-reported count is what makes decord's get_batch hang: do not go there
        raise DecordDisagrees(f"decord indexed {n} frames, the demuxer {expected_frames}")
    raw = np.asarray(vr.get_frame_timestamp(np.arange(n)))[:, 0].astype(np.float64)
    order = np.argsort(raw, kind="stable")
    times = raw[order] - raw[order[0]]
    _check_times(times, cs)
    sampled, timeline = _select(times, cs)
    wanted = np.unique(np.concatenate([sampled, timeline]))
    batch = vr.get_batch(order[wanted].tolist()).asnumpy()
    pos = {int(i): k for k, i in enumerate(wanted)}
    frames = batch[[pos[int(i)] for i in sampled]]
    tl = batch[[pos[int(i)] for i in timeline]] if len(timeline) else batch[:0]
    return frames, times[sampled], tl, times[timeline] if len(timeline) else times[:0]


def decode_video_pyav(
    pictures: Callable[[bool], Iterator[av.VideoFrame]], times: np.ndarray, start: float, rotation: int,
    out_wh: tuple[int, int], cs: IngestSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyAV: one sequential pass (faster than seeking for sparse frames in long GOPs), stopping after the last
    wanted frame; only wanted frames are scaled and converted to RGB. `pictures(nearest)` gives the pictures in
    presentation order, from a decoder configured for `nearest` (configure_decoder).

    With the timeline alone (no uniform frames) the exact frame does not matter: the decoder skips non-reference
    frames, and each wanted frame is the nearest one decoded, with its own time reported."""
    sampled, timeline = _select(times, cs)
    wanted = np.unique(np.concatenate([sampled, timeline]))
    nearest = len(sampled) == 0
    # PyAV scales in coded orientation, then we rotate; out_wh is the display size.
    w, h = (out_wh[1], out_wh[0]) if (rotation // 90) % 2 else out_wh
    picked: dict[int, np.ndarray] = {}
    used: dict[int, int] = {}  # wanted index -> index of the frame that stands for it

    def keep(i: int, frame: av.VideoFrame) -> None:
        if i not in picked:
            _check_size(frame.width, frame.height, cs)
            # Scaled in YUV first (chroma planes are a quarter of the pixels), then converted; AREA averages the
            # source pixels, so a downscale does not alias. swscale's BILINEAR in one RGB step cost 3.7x as much
            # per 1080p frame.
            img = frame.reformat(width=w, height=h, interpolation="AREA").to_ndarray(format="rgb24")
            picked[i] = _rot90(img, rotation)

    with contextlib.closing(pictures(nearest)) as decoded:
        if nearest:
            _decode_nearest(decoded, times, start, [int(i) for i in wanted], keep, used)
        else:
            targets = set(int(i) for i in wanted)
            last = int(wanted[-1])
            for i, frame in enumerate(decoded):
                if i in targets:
                    keep(i, frame)
                if i >= last:
                    break
    if not picked:
        raise CorruptMedia("no picture could be decoded from the video stream; the file is damaged: re-export it")
    # A damaged stream may yield fewer frames than packets: reuse the nearest decoded frame.
    have = np.array(sorted(picked))

    def source(i: int) -> int:
        i = used.get(i, i)
        return i if i in picked else int(have[np.abs(have - i).argmin()])

    empty = np.zeros((0, *next(iter(picked.values())).shape), dtype=np.uint8)
    frames = np.stack([picked[source(int(i))] for i in sampled]) if len(sampled) else empty
    if nearest:  # two wanted frames may share their nearest decoded one: measure it once
        timeline = np.unique([source(int(i)) for i in timeline]).astype(np.int64)
    tl = np.stack([picked[source(int(i))] for i in timeline]) if len(timeline) else empty
    return frames, times[sampled], tl, times[timeline] if len(timeline) else times[:0]


def _decode_nearest(decoded: Any, times: np.ndarray, start: float, wanted: list[int],
                    keep: Any, used: dict[int, int]) -> None:
    """Walk the decoded frames (presentation order, some skipped) and give each wanted index the decoded frame
    nearest to it in time. A frame without a timestamp ends the walk; the caller then reuses the nearest kept."""
    prev: tuple[int, av.VideoFrame] | None = None
    k = 0
    for frame in decoded:
        if frame.pts is None or frame.time_base is None:
            break
        i = int(sampling.pick(times, np.array([float(frame.pts * frame.time_base) - start]))[0])
        while k < len(wanted) and wanted[k] <= i:
            w = times[wanted[k]]
            j, f = (i, frame) if prev is None or times[i] - w <= w - times[prev[0]] else prev
            keep(j, f)
            used[wanted[k]] = j
            k += 1
        if k == len(wanted):
            return
        prev = (i, frame)
    while prev is not None and k < len(wanted):  # the stream ended before the last wanted frames
        keep(prev[0], prev[1])
        used[wanted[k]] = prev[0]
        k += 1


def decode_audio(path: str, fmt: str, cs: IngestSettings, what: str) -> tuple[np.ndarray, AudioInfo] | None:
    """Mono float32 at cs.audio_sample_rate from the first audio stream, or None when there is none."""
    with open_container(path, fmt, what) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        seconds = _seconds(s.duration, s.time_base) or (c.duration / av.time_base if c.duration else None)
        _check_duration(seconds, cs.max_audio_s, "audio")
        sr = cs.audio_sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        limit = int((cs.max_audio_s + 1.0) * sr)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in c.decode(s):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > limit:
                    _check_duration(total / sr, cs.max_audio_s, "audio")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as e:
            if not chunks:
                raise CorruptMedia(
                    f"the audio of the {what} file could not be decoded ({_reason(e)}); re-export it and upload again"
                ) from None
            # keep what decoded before a damaged tail
        audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
        if audio.size == 0:
            return None
        info = AudioInfo(
            sample_rate=sr,
            channels=1,
            seconds=round(audio.size / sr, 4),
            codec=s.codec_context.name,
            source_sample_rate=int(s.codec_context.sample_rate or 0),
            source_channels=int(s.codec_context.channels or 0),
        )
        return audio, info


_pool: ThreadPoolExecutor | None = None


def _audio_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(1, thread_name_prefix="xemo-audio-decode")
    return _pool


def _timed_audio(src: tuple[str, str, str], cs: IngestSettings) -> tuple[tuple[np.ndarray, AudioInfo] | None, float]:
    t = time.perf_counter()
    got = decode_audio(*src[:2], cs, src[2])
    return got, time.perf_counter() - t


def process(job: dict[str, Any], cs: IngestSettings) -> tuple[dict[str, Any], Arrays]:
    """Everything ingest needs from one upload: metadata (JSON-able) and arrays (frames, timeline, audio)."""
    video, vfmt = job.get("video"), job.get("video_fmt")
    audio_path, afmt = job.get("audio"), job.get("audio_fmt")
    meta: dict[str, Any] = {
        "container": vfmt or afmt,
        "video": None,
        "audio": None,
        "frame_times": [],
        "timeline_times": [],
        "decoder": None,
        "timings": {},  # seconds per sub-stage: demux (probe + limits + frame index), video_decode, audio_decode
    }
    arrays: Arrays = {}
    own_audio = False
    duration: float | None = None
    # The audio decodes in a thread while the video decodes here (PyAV lets go of the GIL inside FFmpeg): the
    # separate upload, else the clip's own track, which decode_audio reports as None when there is none.
    src = (audio_path, afmt, "audio") if audio_path is not None else (video, vfmt, "video")
    audio_job = _audio_pool().submit(_timed_audio, src, cs) if src[0] is not None else None
    try:
        if video is not None:
            duration, own_audio = _video_checked(video, vfmt, cs, job.get("decoder", cs.video_decoder), meta, arrays,
                                                 audio_path is not None)
    finally:
        # the video's error comes first, as if the two ran one after the other; never leave the thread running
        # into the next job
        if audio_job is not None:
            wait([audio_job])
    if audio_job is not None and (audio_path is not None or own_audio):
        got, meta["timings"]["audio_decode"] = audio_job.result()
        if got is None and audio_path is not None:  # asked for explicitly: silently dropping it would mislead
            raise NoStreams("the audio file has no audio track; upload a wav, flac, ogg or mp3 with sound in it")
        if got is not None:
            arrays["audio"], info = got
            meta["audio"] = asdict(info)
    if meta["video"] is None and "audio" not in arrays:
        raise NoStreams("nothing to analyse: the upload has no decodable video or audio; upload a clip with either")
    if duration is None:
        duration = meta["audio"]["seconds"]
    meta["duration_s"] = float(duration)
    return meta, arrays


def _video_checked(
    path: str, fmt: str, cs: IngestSettings, decoder: str | None, meta: dict[str, Any], arrays: Arrays,
    separate_audio: bool,
) -> tuple[float | None, bool]:
    """_video_part with FFmpeg's errors as typed ones, and NoStreams for an upload with nothing in it."""
    try:
        duration, own_audio = _video_part(path, fmt, cs, decoder, meta, arrays)
    except av.FFmpegError as e:
        if e.errno == errno.ENOMEM:
            raise TooLarge("decoding this video needs more memory than allowed; upload a smaller clip") from None
        raise CorruptMedia(
            f"the video could not be decoded ({_reason(e)}); the file may be damaged: re-export it and upload again"
        ) from None
    if meta["video"] is None and not own_audio and not separate_audio:
        raise NoStreams(
            "the file has neither a video nor an audio track (or they are damaged); upload a clip with at least one"
        )
    return duration, own_audio


def _video_part(
    path: str, fmt: str, cs: IngestSettings, decoder: str | None, meta: dict[str, Any], arrays: Arrays
) -> tuple[float | None, bool]:
    """Probe the main upload, check its limits, decode its frames. Returns (duration, has an audio track)."""
    t = time.perf_counter()
    with open_container(path, fmt, "video") as c:
        vs = _video_stream(c, fmt)
        has_audio = bool(c.streams.audio)
        if c.duration is not None and c.duration > 0:
            _check_duration(c.duration / av.time_base, cs.max_duration_s, "clip")
        if vs is None:
            meta["timings"]["demux"] = time.perf_counter() - t
            return None, has_audio
        check_video_stream(vs, cs)
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        codec = vs.codec_context.name
        cw, ch = vs.codec_context.width, vs.codec_context.height
        # A profile that perceives the timeline alone decodes nearest frames (decode_video_pyav).
        scan = scan_video_times(c, vs, cs, nearest=cs.uniform_frames is False)
        times, rotation, start = scan.times, scan.rotation, scan.start
        _check_times(times, cs)
        meta["timings"]["demux"] = time.perf_counter() - t
        t = time.perf_counter()
        dw, dh = (ch, cw) if (rotation // 90) % 2 else (cw, ch)
        out_wh = sampling.output_size(dw, dh, cs.long_side)
        result = None
        if decoder == "decord":
            try:
                result = decode_video_decord(path, len(times), out_wh, cs)
                meta["decoder"] = "decord"
            except MediaError:
                raise
            except Exception:  # decord cannot read it (codec, index, bad header): PyAV is the fallback
                result = None
        if result is None:
            def pictures(nearest: bool) -> Iterator[av.VideoFrame]:
                # the scan's decoder goes on where it stopped, unless it was set up for the other kind of decode
                # (a clip too short for a timeline wants every frame)
                return _scanned_frames(vs, scan) if nearest == scan.nearest else _reopened_frames(path, fmt, nearest)

            result = decode_video_pyav(pictures, times, start, rotation, out_wh, cs)
            meta["decoder"] = "pyav"
    meta["timings"]["video_decode"] = time.perf_counter() - t
    frames, ftimes, timeline, ttimes = result
    arrays["frames"] = frames
    if len(timeline):
        arrays["timeline"] = timeline
    # microseconds: decord reports float32 seconds, PyAV exact ones; both agree at this precision
    meta["frame_times"] = [round(float(t), 6) for t in ftimes]
    meta["timeline_times"] = [round(float(t), 6) for t in ttimes]
    span = float(times[-1] - times[0])
    if fps <= 0 and span > 0:
        fps = (len(times) - 1) / span
    duration = span + (min(1.0 / fps, 1.0) if fps > 0 else 0.0)  # + the last frame's own duration
    meta["video"] = asdict(
        VideoInfo(width=dw, height=dh, fps=round(fps, 3), frames=len(times), codec=codec, rotation=(rotation % 360))
    )
    return duration, has_audio
