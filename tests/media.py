"""Real media for tests, made with ffmpeg and espeak-ng (installed by `make`). Shared by every test module.

Every builder writes into the given directory and returns the path; session fixtures in conftest.py cache them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
SENTENCE = "I cannot believe you did this again, this is completely unacceptable."


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def ffmpeg(*args: str) -> None:
    run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


def speech(out: Path, text: str = SENTENCE, pitch: int = 50, speed: int = 175, amp: int = 100,
           voice: str = "en-us") -> Path:
    """espeak-ng speech resampled to 16 kHz mono 16-bit."""
    raw = out.with_suffix(".raw.wav")
    run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amp), "-w", str(raw), text])
    run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)])
    raw.unlink()
    return out


def calm_speech(out: Path) -> Path:
    return speech(out, pitch=30, speed=140, amp=60)


def aroused_speech(out: Path) -> Path:
    return speech(out, pitch=80, speed=220, amp=200)


def silence(out: Path, seconds: float = 3.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(seconds), "-c:a", "pcm_s16le", str(out))
    return out


def testsrc_clip(out: Path, seconds: float = 4.0, size: str = "320x240", rate: int = 25,
                 audio: Path | None = None, vcodec: str = "libx264", extra: list[str] | None = None) -> Path:
    """A test-pattern video (no face), with the given audio track or none."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio is not None:
        args += ["-i", str(audio), "-c:a", "aac", "-shortest"]
    args += ["-c:v", vcodec, "-pix_fmt", "yuv420p", *(extra or []), str(out)]
    ffmpeg(*args)
    return out


def face_image(out: Path) -> Path:
    """A real photograph of a smiling person (skimage's astronaut, public domain)."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(out)
    return out


def face_clip(out: Path, image: Path, seconds: float = 4.0, audio: Path | None = None, rate: int = 25) -> Path:
    """The photograph animated by a slow zoom (so frames differ), with an optional audio track."""
    vf = f"scale=512:512,zoompan=z='min(zoom+0.0015,1.2)':d={int(seconds * rate)}:s=512x512:fps={rate}"
    args = ["-loop", "1", "-framerate", str(rate), "-t", str(seconds), "-i", str(image)]
    if audio is not None:
        args += ["-i", str(audio), "-c:a", "aac", "-shortest"]
    args += ["-vf", vf, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-t", str(seconds), str(out)]
    ffmpeg(*args)
    return out


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A test wav as float32 samples and its sample rate."""
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32")
    return x, sr
