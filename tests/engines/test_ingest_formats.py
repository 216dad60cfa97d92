"""Format detection by magic bytes and the frame-sampling rules: pure functions, no decoding."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import UnsupportedFormat
from engines.ingest import detect_format
from engines.ingest.sampling import output_size, pick, timeline_indices, uniform_indices


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "mp4"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm\x42\x87", "webm"),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska\x42\x87", "mkv"),
        (b"RIFF\x24\x00\x00\x00AVI LIST", "avi"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00", "flac"),
        (b"OggS\x00\x02\x00\x00\x00\x00\x00\x00", "ogg"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE", "mp3"),
        (b"\xff\xfb\x90\x64\x00\x00\x00\x00\x00\x00\x00\x00", "mp3"),
    ],
)
def test_detects_allowed_containers(head: bytes, fmt: str) -> None:
    assert detect_format(head) == fmt


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"", "empty"),
        (b"\x00\x00\x00", "only 3 bytes"),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:10,\nfile:///etc/passwd\n", "unrecognised"),
        (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "unrecognised"),
        (b"I am a text file renamed to clip.mp4\n", "unrecognised"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unrecognised"),  # image2 input
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01", "unrecognised"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc\x21\x00\x00\x00\x00", "unrecognised"),  # ADTS AAC is not mp3
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1", "still image"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "neither WAV nor AVI"),
        (b"<?xml version='1.0'?><MPD xmlns='urn:mpeg:dash'>", "unrecognised"),  # DASH manifest
    ],
)
def test_refuses_everything_else(head: bytes, why: str) -> None:
    with pytest.raises(UnsupportedFormat, match=why):
        detect_format(head)


def test_cfr_sampling_matches_the_authors_linspace() -> None:
    for n_frames in (16, 17, 50, 116, 301):
        times = np.arange(n_frames) / 25.0
        expected = np.linspace(0, n_frames - 1, 16, dtype=int)
        assert uniform_indices(times, 16).tolist() == expected.tolist()


def test_vfr_sampling_is_uniform_in_time_not_in_index() -> None:
    # 2 s at 5 fps then 2 s at 50 fps: index sampling would put 15 of 16 frames in the second half.
    times = np.concatenate([np.arange(0, 2, 0.2), 2 + np.arange(0, 2, 0.02)])
    picked = times[uniform_indices(times, 16)]
    assert np.abs(picked - np.linspace(0, times[-1], 16)).max() <= 0.2 + 1e-9
    assert (picked < 2).sum() in (7, 8, 9)


def test_pick_takes_the_frame_on_screen() -> None:
    times = np.array([0.0, 1.0, 2.0])
    assert pick(times, np.array([0.0, 0.99, 1.0, 5.0])).tolist() == [0, 0, 1, 2]


def test_timeline_is_capped_by_fps_and_budget() -> None:
    times = np.arange(0, 60, 1 / 30)
    assert len(timeline_indices(times, 4.0, 10_000)) == int(times[-1] * 4)
    assert len(timeline_indices(times, 4.0, 100)) == 100
    assert len(timeline_indices(times, 0.0, 100)) == 0
    short = timeline_indices(np.arange(0, 1, 0.5), 4.0, 100)  # 2 frames: never more than exist
    assert len(short) <= 2


def test_output_size_downscales_long_side_only() -> None:
    assert output_size(1280, 720, 720) == (720, 404)
    assert output_size(720, 1280, 720) == (404, 720)
    assert output_size(320, 240, 720) == (320, 240)
