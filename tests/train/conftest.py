"""The fixed toy set of the training tests, built once per session: 8 generated clips in 4 classes (a visual
pattern, a voice and a description each), two clips per class, one on each side of the split (the validation
clip starts later in the pattern and 50 ms later in the same utterance), and the data directory `xemo data build`
makes of them with the tiny XEmoGPT parts; then the three stages trained on it, each from the one before."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import media
import pytest
import yaml
from tiny_models import build_tiny_xemogpt
from train_helpers import STEPS, with_train

from xemo.settings import Settings, load_yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (name, lavfi video source, sentence, espeak pitch, speed, emotion, description)
CLASSES = [
    ("bars", "testsrc=size=320x240:rate=25", "I am so happy to see you again today!", 85, 210, "happy",
     "In the video, bright colour bars fill the screen and the man smiles broadly. In the audio, his voice is "
     "high and quick. Therefore, it is inferred that his emotional state is happy."),
    ("stripes", "smptebars=size=320x240:rate=25", "I feel tired, and nothing matters any more.", 20, 120, "sad",
     "In the video, grey stripes cover the screen and she looks down with tears in her eyes. In the audio, her "
     "voice is low and slow. Therefore, it is inferred that her emotional state is sad."),
    ("fractal", "mandelbrot=size=320x240:rate=25", "Get out of my room right now!", 60, 260, "angry",
     "In the video, a dark swirling pattern fills the screen and he frowns with knitted brows. In the audio, he "
     "shouts loudly and sharply. Therefore, it is inferred that his emotional state is angry."),
    ("plain", "rgbtestsrc=size=320x240:rate=25", "The meeting starts at three in the afternoon.", 45, 160,
     "neutral", "In the video, plain red green and blue blocks are shown and her face is relaxed. In the audio, "
     "her tone is calm and even. Therefore, it is inferred that her emotional state is neutral."),
]


def _clip(out: Path, source: str, wav: Path, offset: float) -> Path:
    media.ffmpeg("-f", "lavfi", "-ss", str(offset), "-i", source, "-ss", str(offset / 20), "-i", str(wav), "-t", "2",
                 "-c:v", "libx264",
                 "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out))
    return out


def _sharp_llm(src: Path, dst: Path) -> Path:
    """The tiny Qwen3 with its (tied) embeddings scaled up: at the random init's std of 0.02 the logits stay near
    uniform whatever LoRA does, so the LM loss could barely move; a pretrained LM has a wide logit range."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(6.0)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def tiny_train(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny CLIP / HuBERT / Qwen3 and a settings YAML for training them on CPU (LoRA r 16, alpha 64)."""
    root = tmp_path_factory.mktemp("tiny_train_model")
    tiny = build_tiny_xemogpt(root)
    llm = _sharp_llm(Path(tiny["llm"]), root / "llm_sharp")
    cfg = load_yaml(Path(tiny["config"]))
    cfg["xemogpt"].pop("checkpoint")
    cfg["xemogpt"] |= {"llm": str(llm), "lora_r": 16, "lora_alpha": 64}
    cfg["train"] = {"batch_size": 4, "embed_dim": 32, "lr": 3e-3, "eval_every": 1000, "save_every": 1000,
                    "eval_max_new_tokens": 24, "feature_cache_mb": 64, "cpu_threads": 1}
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return {**tiny, "train_config": path, "llm": llm}


@pytest.fixture(scope="session")
def train_settings(tiny_train: dict[str, Any]) -> Settings:
    return Settings(**load_yaml(Path(tiny_train["train_config"])))


@pytest.fixture(scope="session")
def toy_clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(clips dir, CSV): two clips per class (the second shifted in time, its voice a little faster)."""
    d = tmp_path_factory.mktemp("toy_clips")
    rows = []
    for name, source, sentence, pitch, speed, emotion, reason in CLASSES:
        for k, (offset, dspeed) in enumerate(((0.0, 0), (1.0, 0))):
            wav = media.speech(d / f"{name}_{k}.wav.tmp.wav", sentence, pitch=pitch, speed=speed + dspeed)
            _clip(d / f"{name}_{k}.mp4", source, wav, offset)
            wav.unlink()
            rows.append({"names": f"{name}_{k}", "emotions": emotion, "subtitles": sentence, "reasons": reason,
                         "split": "validation" if k else "train"})
    csv_path = d / "toy.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return d, csv_path


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory, toy_clips: tuple[Path, Path], train_settings: Settings
             ) -> tuple[Path, Any]:
    """`xemo data build` of the toy clips, with the lite profile's weak labels: (DATA dir, BuildReport)."""
    from train.build import build

    out = tmp_path_factory.mktemp("toy_data")
    return out, build(train_settings, toy_clips[0], toy_clips[1], out, weak_labels=True)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, toy_data: tuple[Path, Any], train_settings: Settings
         ) -> dict[str, Any]:
    """stage1 (30 steps) -> stage2 (--init stage1) -> stage3 (--init stage2), plus a 0-step stage3 (the
    untrained model) for comparison: {stage: Result}."""
    from train.loop import run

    root = tmp_path_factory.mktemp("runs")
    data = toy_data[0]
    out = {"stage1": run(train_settings, "stage1", data, root / "s1", STEPS, progress=False)}
    out["stage2"] = run(train_settings, "stage2", data, root / "s2", STEPS, root / "s1" / "checkpoint.ckpt",
                        progress=False)
    s3 = with_train(train_settings, lr=1e-2)
    out["stage3"] = run(s3, "stage3", data, root / "s3", STEPS, root / "s2" / "checkpoint.ckpt", progress=False)
    out["stage3_untrained"] = run(s3, "stage3", data, root / "s3_0", 0, root / "s2" / "checkpoint.ckpt",
                                  progress=False)
    return out
