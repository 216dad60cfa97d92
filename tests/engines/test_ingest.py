"""Ingest on real media: containers and codecs, audio-only, video-only, separate audio, rotation, VFR, sampling.

Media is built once per session with ffmpeg / espeak-ng; both video decoders (decord, PyAV) are checked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import media
import numpy as np
import pytest
import soundfile as sf

from engines.errors import NoStreams
from engines.ingest import ingest
from engines.types import Clip
from xemo.settings import IngestSettings

DECODERS = ["decord", "pyav"]
SAMPLE = media.SAMPLES / "sample_00000007.mp4"


def settings(**kw: object) -> IngestSettings:
    return IngestSettings(decode_timeout_s=20.0, **kw)


@pytest.fixture(scope="session")
def small(media_dir: Path, speech_wav: Path) -> dict[str, Path]:
    """2 s 160x120 25 fps clips in several containers and codecs, each with the speech as its audio track."""
    d = media_dir / "containers"
    d.mkdir()
    variants = {
        "mp4": ("clip.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"]),
        "webm": ("clip.webm", ["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k", "-c:a", "libopus"]),
        "mkv": (
            "clip.mkv",
            ["-c:v", "libx265", "-x265-params", "log-level=none", "-pix_fmt", "yuv420p", "-c:a", "libvorbis"],
        ),
        "avi": ("clip.avi", ["-c:v", "mjpeg", "-q:v", "5", "-c:a", "pcm_s16le"]),
        "mov": ("clip.mov", ["-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac"]),
    }
    out = {}
    for name, (fname, codec) in variants.items():
        out[name] = d / fname
        media.ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25:duration=2",
            "-i",
            str(speech_wav),
            "-t",
            "2",
            *codec,
            str(out[name]),
        )
    return out


@pytest.fixture(scope="session")
def audio_only(media_dir: Path, speech_wav: Path) -> dict[str, Path]:
    d = media_dir / "audio_only"
    d.mkdir()
    out = {"wav": speech_wav}
    for fmt, codec in (("flac", "flac"), ("ogg", "libopus"), ("mp3", "libmp3lame")):
        out[fmt] = d / f"speech.{fmt}"
        media.ffmpeg("-i", str(speech_wav), "-c:a", codec, str(out[fmt]))
    return out


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("container", ["mp4", "webm", "mkv", "avi", "mov"])
def test_containers_and_codecs(small: dict[str, Path], container: str, decoder: str) -> None:
    clip = ingest(small[container], None, settings(video_decoder=decoder))
    assert clip.container == ("mp4" if container == "mov" else container)
    assert clip.frames is not None and clip.frames.shape == (16, 120, 160, 3)
    assert clip.frames.dtype == np.uint8
    assert len(clip.frame_times) == 16 and clip.frame_times == sorted(clip.frame_times)
    assert clip.frame_times[0] == pytest.approx(0.0) and clip.frame_times[-1] == pytest.approx(1.96, abs=0.05)
    assert clip.duration_s == pytest.approx(2.0, abs=0.05)
    assert clip.video is not None and (clip.video.width, clip.video.height) == (160, 120)
    assert clip.video.fps == pytest.approx(25.0, abs=0.5)
    assert clip.audio is not None and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert clip.audio_info is not None and clip.audio_info.sample_rate == 16000
    assert len(clip.audio) / 16000 == pytest.approx(2.0, abs=0.1)
    assert np.abs(clip.audio).max() > 0.05  # the speech, not silence
    assert len(np.unique(clip.frames.reshape(16, -1).mean(1).round(2))) > 1  # frames differ (testsrc moves)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_audio_only_uploads(audio_only: dict[str, Path], speech_wav: Path, fmt: str) -> None:
    clip = ingest(audio_only[fmt], None, settings())
    ref, sr = sf.read(speech_wav, dtype="float32")
    assert clip.container == fmt and clip.video is None and clip.frames is None and clip.frame_times == []
    assert clip.audio is not None and clip.audio_info is not None
    assert clip.duration_s == pytest.approx(len(ref) / sr, abs=0.1)
    n = min(len(ref), len(clip.audio))
    if fmt in ("wav", "flac"):  # lossless and aligned: the same samples
        np.testing.assert_allclose(clip.audio[:n], ref[:n], atol=1e-4)


def test_audio_only_in_the_audio_slot(speech_wav: Path) -> None:
    clip = ingest(None, speech_wav, settings())
    assert clip.video is None and clip.audio is not None and clip.container == "wav"
    assert set(clip.timings) == {"audio_decode"}


def test_ingest_reports_its_sub_stage_timings(testsrc_mp4: Path, video_only_mp4: Path) -> None:
    full = ingest(testsrc_mp4, None, settings()).timings
    assert set(full) == {"demux", "video_decode", "audio_decode"} and all(v > 0 for v in full.values())
    assert set(ingest(video_only_mp4, None, settings()).timings) == {"demux", "video_decode"}


def test_video_only_clip(video_only_mp4: Path) -> None:
    clip = ingest(video_only_mp4, None, settings())
    assert clip.frames is not None and clip.frames.shape[0] == 16
    assert clip.audio is None and clip.audio_info is None
    assert clip.probe_dict()["audio"] is None


def test_separate_audio_replaces_the_clips_own_track(
    testsrc_mp4: Path, silence_wav: Path, video_only_mp4: Path, speech_wav: Path
) -> None:
    own = ingest(testsrc_mp4, None, settings())
    assert own.audio is not None and np.abs(own.audio).max() > 0.05
    replaced = ingest(testsrc_mp4, silence_wav, settings())
    assert replaced.audio is not None and np.abs(replaced.audio).max() < 1e-3
    assert replaced.audio_info is not None and replaced.audio_info.codec == "pcm_s16le"
    added = ingest(video_only_mp4, speech_wav, settings())
    ref, _ = sf.read(speech_wav, dtype="float32")
    assert added.audio is not None and np.corrcoef(added.audio[: len(ref)], ref[: len(added.audio)])[0, 1] > 0.99
    assert len({own.sha256, replaced.sha256, added.sha256}) == 3


def test_separate_audio_without_sound_is_no_streams(testsrc_mp4: Path, video_only_mp4: Path) -> None:
    with pytest.raises(NoStreams, match="audio file has no audio track"):
        ingest(testsrc_mp4, video_only_mp4, settings())


def test_bytes_and_path_give_the_same_clip(testsrc_mp4: Path) -> None:
    a = ingest(testsrc_mp4, None, settings())
    b = ingest(testsrc_mp4.read_bytes(), None, settings())
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)


def test_no_video_and_no_audio_is_no_streams(media_dir: Path) -> None:
    srt = media_dir / "only.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    mkv = media_dir / "only_subtitles.mkv"
    media.ffmpeg("-i", str(srt), "-c:s", "srt", str(mkv))
    with pytest.raises(NoStreams, match="neither a video nor an audio"):
        ingest(mkv, None, settings())


@pytest.fixture(scope="session")
def hd_clip(media_dir: Path) -> Path:
    return media.testsrc_clip(media_dir / "hd.mp4", seconds=1.0, size="1280x720", extra=["-preset", "ultrafast"])


def test_frames_are_downscaled_while_decoding_and_decoders_agree(hd_clip: Path) -> None:
    clips = [ingest(hd_clip, None, settings(video_decoder=d)) for d in DECODERS]
    for c in clips:
        assert c.frames is not None and c.frames.shape == (16, 404, 720, 3)
        assert c.video is not None and (c.video.width, c.video.height) == (1280, 720)
    assert clips[0].frame_times == clips[1].frame_times
    assert np.abs(clips[0].frames.astype(int) - clips[1].frames.astype(int)).mean() < 4
    small = ingest(hd_clip, None, settings(long_side=320, num_frames=4, timeline_fps=0))
    assert small.frames is not None and small.frames.shape == (4, 180, 320, 3) and small.timeline is None


def _ffmpeg_first_frame(path: Path, w: int, h: int) -> np.ndarray:
    """The first frame as FFmpeg itself shows it (autorotate on), as a reference."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated_metadata_gives_upright_frames(
    media_dir: Path, video_only_mp4: Path, rotate: int, decoder: str
) -> None:
    rotated = media_dir / f"rotated_{rotate}.mp4"
    if not rotated.exists():
        media.ffmpeg("-i", str(video_only_mp4), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", str(rotated))
    clip = ingest(rotated, None, settings(video_decoder=decoder))
    w, h = (320, 240) if rotate == 180 else (240, 320)  # as displayed: portrait for 90 and 270
    assert clip.frames is not None and clip.frames.shape == (16, h, w, 3)
    assert clip.video is not None and (clip.video.width, clip.video.height) == (w, h)
    assert clip.video.rotation == rotate
    ref = _ffmpeg_first_frame(rotated, w, h)
    assert np.abs(clip.frames[0].astype(int) - ref.astype(int)).mean() < 3
    wrong = np.rot90(ref, 2)  # the check can fail: upside down is far from the reference
    assert np.abs(clip.frames[0].astype(int) - wrong.astype(int)).mean() > 20


@pytest.fixture(scope="session")
def vfr_clip(media_dir: Path) -> Path:
    """First 2 s at 5 fps, last 2 s at 50 fps (timestamps kept: variable frame rate)."""
    out = media_dir / "vfr.mp4"
    media.ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=50:duration=4",
        "-vf",
        "select='if(lt(t,2),not(mod(n,10)),1)'",
        "-vsync",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(out),
    )
    return out


@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate_is_sampled_uniformly_in_time(vfr_clip: Path, decoder: str) -> None:
    clip = ingest(vfr_clip, None, settings(video_decoder=decoder))
    assert clip.video is not None and clip.video.frames == 10 + 100
    times = np.array(clip.frame_times)
    assert times[-1] == pytest.approx(3.98, abs=0.03)
    # index-uniform sampling would put only 1-2 of 16 frames in the 5 fps half
    assert np.abs(times - np.linspace(0, times[-1], 16)).max() <= 0.2 + 1e-6
    assert 7 <= int((times < 2).sum()) <= 9
    assert clip.frames is not None and len(np.unique(clip.frames.reshape(16, -1).sum(1))) >= 12


def test_timeline_is_capped_by_fps_and_frame_budget(testsrc_mp4: Path) -> None:
    clip = ingest(testsrc_mp4, None, settings(timeline_fps=4.0))
    assert clip.timeline is not None and len(clip.timeline) == len(clip.timeline_times) == 15
    assert np.diff(clip.timeline_times).min() >= 1 / 4.0 - 0.05
    assert clip.timeline.shape[1:] == clip.frames.shape[1:]
    capped = ingest(testsrc_mp4, None, settings(timeline_fps=25.0, max_decoded_frames=24))
    assert capped.timeline is not None and len(capped.timeline) == 24 - 16
    off = ingest(testsrc_mp4, None, settings(timeline_fps=0))
    assert off.timeline is None and off.probe_dict()["timeline_frames"] == 0


def test_num_frames_setting(testsrc_mp4: Path) -> None:
    clip = ingest(testsrc_mp4, None, settings(num_frames=8))
    assert clip.frames is not None and clip.frames.shape[0] == 8 and len(clip.frame_times) == 8


@pytest.mark.skipif(not SAMPLE.exists(), reason="../shared/samples is not present")
def test_shared_sample_clip() -> None:
    clip: Clip = ingest(SAMPLE, None, settings())
    assert clip.frames is not None and clip.frames.shape[0] == 16 and len(clip.frame_times) == 16
    assert clip.duration_s == pytest.approx(4.64, abs=0.02)
    assert clip.audio_info is not None and clip.audio_info.sample_rate == 16000
    ref, sr = sf.read(SAMPLE.with_suffix(".wav"), dtype="float32")
    ref = ref.mean(axis=1) if ref.ndim > 1 else ref
    assert sr == 16000
    assert clip.audio is not None and abs(len(clip.audio) - len(ref)) / 16000 <= 0.05
    n = min(len(ref), len(clip.audio))
    assert np.corrcoef(clip.audio[:n], ref[:n])[0, 1] > 0.9


@pytest.mark.parametrize("container", ["mp4", "webm", "mkv", "avi", "mov"])
def test_decord_really_reads_ordinary_files(small: dict[str, Path], vfr_clip: Path, container: str) -> None:
    """PyAV silently taking over would hide a broken decord: on ordinary files decord must do the work."""
    from engines.ingest.decode import process

    for path in (small[container], vfr_clip):
        fmt = "mp4" if path.suffix == ".mov" else path.suffix[1:]
        meta, arrays = process({"video": str(path), "video_fmt": fmt, "decoder": "decord"}, settings())
        assert meta["decoder"] == "decord", path.name
        assert arrays["frames"].shape[0] == 16


@pytest.fixture(scope="session")
def bframe_clip(media_dir: Path) -> Path:
    """4 s at 25 fps, three B-frames between references and none of them a reference (no B-pyramid)."""
    return media.testsrc_clip(media_dir / "bframes.mp4", seconds=4.0, size="320x240",
                              extra=["-bf", "3", "-b_strategy", "0", "-x264-params", "b-pyramid=none"])


def _frame_types(path: Path) -> dict[float, str]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        # FFmpeg's AVPictureType: 1 = I, 2 = P, 3 = B
        return {round(float(f.pts * s.time_base), 6): "?IPB"[min(int(f.pict_type), 4) % 4] for f in c.decode(s)}


def test_timeline_only_skips_non_reference_frames_and_reports_the_frames_used(bframe_clip: Path) -> None:
    types = _frame_types(bframe_clip)
    assert sum(t == "B" for t in types.values()) >= 60  # the clip really has non-reference frames
    exact = ingest(bframe_clip, None, settings(video_decoder="pyav", uniform_frames=True))
    near = ingest(bframe_clip, None, settings(video_decoder="pyav", uniform_frames=False))
    assert near.frames is not None and near.frames.shape[0] == 0 and near.frame_times == []
    assert near.timeline is not None and len(near.timeline) == len(near.timeline_times) == len(exact.timeline_times)
    for t_near, t_exact in zip(near.timeline_times, exact.timeline_times, strict=True):
        assert types[round(t_near, 6)] in ("I", "P")  # only decoded reference frames stand in
        assert abs(t_near - t_exact) <= 2 / 25 + 1e-6  # the nearest one: at most two B-frames away
    # each stand-in is that frame itself, decoded without the deblocking filter: where both paths chose the same
    # frame the pixels differ (the filter was skipped) but stay close to the exact path's
    same = [i for i, (a, b) in enumerate(zip(near.timeline_times, exact.timeline_times, strict=True)) if a == b]
    assert same
    psnr = [_psnr(near.timeline[i], exact.timeline[i]) for i in same]
    assert min(psnr) >= 30.0, psnr
    assert any(p < 99.0 for p in psnr), "every frame came out bit-identical: the loop filter still ran"


@pytest.mark.parametrize("uniform", [False, True])
def test_one_pass_decodes_what_a_second_pass_over_the_file_would(bframe_clip: Path, uniform: bool) -> None:
    """The decoder goes on from the packet scan instead of reading the file again; its pictures, to the last ones
    the decoder gives out when flushed, are those of a fresh pass, with the same times."""
    from engines.ingest import decode

    cs = settings(video_decoder="pyav", uniform_frames=uniform)
    path = str(bframe_clip)

    def stamped(frames: object) -> list[tuple[int, object, bytes]]:
        return [(f.pts, f.time_base, bytes(f.planes[0])) for f in frames]  # type: ignore[attr-defined]

    with decode.open_container(path, "mp4", "video") as c:
        s = decode._video_stream(c, "mp4")
        scan = decode.scan_video_times(c, s, cs, nearest=not uniform)
        assert scan.early and scan.rest and not scan.flushed  # it stopped decoding at the first picture
        one_pass = stamped(decode._scanned_frames(s, scan))
    two_pass = stamped(decode._reopened_frames(path, "mp4", not uniform))
    assert len(one_pass) == len(two_pass) == (100 if uniform else 25 + 1)  # non-reference B-frames skipped
    assert one_pass == two_pass
    assert all(tb is not None for _, tb, _ in one_pass)  # the flushed pictures too: nearest picks read their time


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_uniform_frames_come_back_for_a_clip_too_short_for_a_timeline(media_dir: Path) -> None:
    short = media.testsrc_clip(media_dir / "short.mp4", seconds=0.2)
    clip = ingest(short, None, settings(uniform_frames=False))
    assert clip.timeline is None
    assert clip.frames is not None and clip.frames.shape[0] == 16


def test_the_profile_decides_which_frames_are_decoded() -> None:
    from xemo.settings import Settings

    lite, research = Settings(), Settings(profile="xemogpt")
    assert (lite.ingest.uniform_frames, lite.ingest.video_decoder) == (False, "pyav")
    assert (research.ingest.uniform_frames, research.ingest.video_decoder) == (True, "decord")
    no_timeline = Settings(lite={"use_timeline": False})
    assert (no_timeline.ingest.uniform_frames, no_timeline.ingest.video_decoder) == (True, "decord")
    chosen = Settings(ingest={"uniform_frames": True, "video_decoder": "pyav"})
    assert (chosen.ingest.uniform_frames, chosen.ingest.video_decoder) == (True, "pyav")
