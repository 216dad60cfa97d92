"""`xemo`: the one command line. Each command is a thin wrapper over a module in xemo/commands/.

Heavy imports (torch, mediapipe, llama.cpp) happen inside the commands, so `xemo --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from xemo.settings import ConfigError, Settings, load_settings

# No hub downloads, ever: every model is read from a local path or from inside an installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Root options that may also be written after the subcommand (`xemo analyze CLIP --config FILE`).
GLOBAL_OPTIONS = {"--config": "-c"}


class GlobalOptionsGroup(TyperGroup):
    """The root group: moves global options found after the subcommand to the front before click parses them,
    so they work in either position. A subcommand with an option of the same spelling keeps its own."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_global_options(self, ctx, args)
        return super().parse_args(ctx, args)


def hoist_global_options(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    own = _subcommand_options(group, ctx, args)
    spellings = {x for long, short in GLOBAL_OPTIONS.items() for x in (long, short) if x not in own}
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name = a.split("=", 1)[0] if a.startswith("--") else a
        if name in spellings:
            if "=" in a and a.startswith("--"):
                front.append(a)
                i += 1
                continue
            front += args[i : i + 2]
            i += 2
            continue
        rest.append(a)
        i += 1
    return front + rest


def _subcommand_options(group: click.Group, ctx: click.Context, args: list[str]) -> set[str]:
    """Option spellings of the command that `args` invokes (walking nested groups by name)."""
    cmd: click.Command = group
    for a in args:
        if not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(ctx, a) if not a.startswith("-") else None
        if sub is not None:
            cmd = sub
    if cmd is group:
        return set()
    return {o for p in cmd.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}


app = typer.Typer(
    cls=GlobalOptionsGroup,
    no_args_is_help=True,
    help="Explainable multimodal emotion recognition.",
)
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
    clips: list[str] | None = typer.Argument(
        None, help="Video or audio file; a directory or a glob (quoted) for many, as JSONL. None: --transcript alone."
    ),
    audio: Path | None = typer.Option(None, "--audio", help="Separate audio file (one clip only)."),
    transcript: str | None = typer.Option(None, "--transcript", help="What is said (optional; alone: text only)."),
    labels: str | None = typer.Option(None, "--labels", help="Comma-separated label set."),
    as_json: bool = typer.Option(False, "--json", help="Print only the answer object."),
    out: Path | None = typer.Option(None, "--out", help="Many clips: write the JSONL here instead of stdout."),
    asr: bool | None = typer.Option(
        None, "--asr/--no-asr", help="Transcribe the clip's speech even with --transcript (--no-asr: never)."
    ),
) -> None:
    """Analyse a clip (or many, or a transcript alone) end to end with the configured profile."""
    from xemo.commands.analyze import run

    sys.exit(run(settings(), clips or [], audio, transcript, labels, as_json, out, asr))


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Overrides server.host."),
    port: int | None = typer.Option(None, help="Overrides server.port."),
    use_ray: bool = typer.Option(
        False, "--ray", help="Serve as a Ray Serve application (settings.ray; needs `pip install .[ray]`)."
    ),
) -> None:
    """Start the HTTP server (REST, SSE, WebSocket, Prometheus metrics)."""
    from xemo.commands.serve import run, run_ray

    sys.exit((run_ray if use_ray else run)(settings(), host, port))


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


client_app = typer.Typer(no_args_is_help=True, help="Talk to a running xemo server (xemo.client).")
app.add_typer(client_app, name="client")


@client_app.command("analyze")
def client_analyze(
    url: str = typer.Argument(..., help="Base URL of the server, e.g. http://127.0.0.1:8000."),
    clip: Path | None = typer.Argument(None, help="Video or audio file (none: --transcript alone)."),
    audio: Path | None = typer.Option(None, "--audio", help="Separate audio file."),
    transcript: str | None = typer.Option(None, "--transcript", help="What is said."),
    labels: str | None = typer.Option(None, "--labels", help="Comma-separated label set."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="XEMO_API_KEY", help="Bearer key (or XEMO_API_KEY)."),
    stream: bool = typer.Option(False, "--stream", help="Print the events as they arrive (SSE), one JSON per line."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds to wait for the answer."),
    asr: bool | None = typer.Option(
        None, "--asr/--no-asr", help="Transcribe the clip's speech even with --transcript (--no-asr: never)."
    ),
) -> None:
    """Send one clip (or a transcript) to a server; print the answer as JSON."""
    from xemo.commands.client import analyze as run

    sys.exit(run(url, clip, audio, transcript, labels, api_key, stream, timeout, asr))


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
