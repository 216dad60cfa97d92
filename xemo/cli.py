"""`xemo`: the one command line. Each command is a thin wrapper over a module in xemo/commands/.

Heavy imports (torch, mediapipe, llama.cpp) happen inside the commands, so `xemo --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from xemo.settings import ConfigError, Settings, load_settings

# No hub downloads, ever: every model is read from a local path or from inside an installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Explainable multimodal emotion recognition.")
eval_app = typer.Typer(no_args_is_help=True, help="EmoCue-360 scoring, cue extraction and benchmark runs.")
app.add_typer(eval_app, name="eval")

_state: dict[str, Path | None] = {"config": None}


def settings() -> Settings:
    try:
        return load_settings(_state["config"])
    except ConfigError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.callback()
def _root(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML settings file (or XEMO_CONFIG)."),
) -> None:
    _state["config"] = config
    if config is not None:  # uvicorn workers and other child processes load the same file
        os.environ["XEMO_CONFIG"] = str(config)


@app.command("config")
def config_cmd(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print the effective settings (secrets redacted)."""
    data = settings().redacted()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False))


@app.command()
def probe(
    clip: Path = typer.Argument(..., help="Video or audio file."),
    audio: Path | None = typer.Option(None, "--audio", help="Separate audio file (e.g. a 16 kHz wav)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show what ingest sees: container, duration, streams, sampled frame times."""
    from xemo.commands.probe import run

    sys.exit(run(settings(), clip, audio, as_json))


@app.command()
def analyze(
    clip: Path = typer.Argument(..., help="Video or audio file."),
    audio: Path | None = typer.Option(None, "--audio", help="Separate audio file."),
    transcript: str | None = typer.Option(None, "--transcript", help="What is said (optional)."),
    labels: str | None = typer.Option(None, "--labels", help="Comma-separated label set."),
    as_json: bool = typer.Option(False, "--json", help="Print only the answer object."),
) -> None:
    """Analyse one clip end to end with the configured profile."""
    from xemo.commands.analyze import run

    sys.exit(run(settings(), clip, audio, transcript, labels, as_json))


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Overrides server.host."),
    port: int | None = typer.Option(None, help="Overrides server.port."),
) -> None:
    """Start the HTTP server (REST, SSE, WebSocket, Prometheus metrics)."""
    from xemo.commands.serve import run

    sys.exit(run(settings(), host, port))


@app.command("convert-checkpoint")
def convert_checkpoint(
    out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
    gguf: bool = typer.Option(False, "--gguf", help="Also write the merged LLM as GGUF."),
) -> None:
    """Turn the released XEmoGPT checkpoint into a self-contained serving bundle."""
    from xemo.commands.convert import run

    sys.exit(run(settings(), out, gguf))


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", help="Artefact directory."),
    fmt: str = typer.Option("onnx", "--format", help="onnx | tensorrt | all"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 | int8"),
) -> None:
    """Compile the encoders + cue bridges to ONNX / TensorRT and check parity with PyTorch."""
    from xemo.commands.export import run

    sys.exit(run(settings(), out, fmt, precision))


@eval_app.command("score")
def eval_score(
    pred: Path = typer.Option(..., "--pred"),
    ref: Path = typer.Option(..., "--ref"),
    matching: str = typer.Option("max", "--matching", help="max (as released) | one-to-one"),
    threshold: float = typer.Option(0.5, "--threshold", help="Similarity threshold for one-to-one."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """EmoCue-360 precision / recall / F1 of predicted cues against reference cues."""
    from xemo.commands.evaluate import score

    sys.exit(score(settings(), pred, ref, matching, threshold, as_json))


@eval_app.command("extract")
def eval_extract(
    inp: Path = typer.Argument(..., help="JSONL with id + description."),
    out: Path = typer.Option(..., "--out"),
    extractor: str = typer.Option("offline", "--extractor", help="offline | openai"),
) -> None:
    """Split free-text descriptions into visual / auditory / emotional cue lists."""
    from xemo.commands.evaluate import extract

    sys.exit(extract(settings(), inp, out, extractor))


@eval_app.command("run")
def eval_run(
    manifest: Path = typer.Argument(...),
    out: Path = typer.Option(..., "--out"),
    server: str | None = typer.Option(None, "--server", help="Base URL of a running xemo server."),
    concurrency: int = typer.Option(1, "--concurrency"),
) -> None:
    """Analyse every clip of a manifest, score it and write a report."""
    from xemo.commands.evaluate import run_manifest

    sys.exit(run_manifest(settings(), manifest, out, server, concurrency))


data_app = typer.Typer(no_args_is_help=True, help="Training data: build it from clips and their descriptions.")
app.add_typer(data_app, name="data")


@app.command("train")
def train_cmd(
    stage: str = typer.Argument(..., help="stage1 (VECB) | stage2 (AECB) | stage3 (instruction tuning)"),
    data: Path = typer.Option(..., "--data", help="Directory written by `xemo data build`."),
    out: Path = typer.Option(..., "--out", help="Run directory (resumed when it holds a checkpoint)."),
    steps: int | None = typer.Option(None, "--steps", help="Overrides train.steps."),
    init: Path | None = typer.Option(None, "--init", help="Checkpoint to start from (released key layout)."),
) -> None:
    """Train one stage of XEmoGPT; under torchrun each process trains on its share of every batch."""
    from xemo.commands.train import run

    sys.exit(run(settings(), stage, data, out, steps, init))


@data_app.command("build")
def data_build(
    clips: Path = typer.Option(..., "--clips", help="Folder of clips named after the CSV's names column."),
    csv: Path = typer.Option(..., "--csv", help="EMER / MER-Caption CSV: names, emotions, subtitles, reasons."),
    out: Path = typer.Option(..., "--out", help="Data directory to write."),
    weak_labels: bool = typer.Option(True, "--weak-labels/--no-weak-labels", help="Measure lite cues per clip."),
) -> None:
    """Turn clips + descriptions into the data of all three training stages."""
    from xemo.commands.data import build

    sys.exit(build(settings(), clips, csv, out, weak_labels))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
