"""`xemo analyze`: one clip end to end with the configured profile, on the terminal or as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engines.errors import XemoError
from engines.pipeline import Pipeline, build_pipeline
from engines.types import AnalyzeRequest, Answer, CueEvent, DoneEvent, LabelEvent, TokenEvent
from xemo.settings import Settings


def run(settings: Settings, clip: Path, audio: Path | None, transcript: str | None, labels: str | None,
        as_json: bool) -> int:
    from engines.ingest import ingest  # imports the decoders: only when a clip is analysed
    from xemo.commands.preflight import preflight

    if rc := preflight(settings):
        return rc

    err = Console(stderr=True)
    out = Console()
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    try:
        with err.status(f"loading the {settings.profile} profile"):
            pipeline = build_pipeline(settings)
            pipeline.load()
            pipeline.warmup()
        t0 = time.perf_counter()
        with err.status("ingesting the clip"):
            c = ingest(clip, audio, settings.ingest)
        ingest_s = time.perf_counter() - t0
        request = AnalyzeRequest(clip=c, transcript=transcript, labels=label_list, received_at=t0)
        with err.status("perceiving cues"):
            answer = asyncio.run(_stream(pipeline, request, None if as_json else out))
    except XemoError as e:
        err.print(f"[red]error ({e.type}):[/red] {e.message}")
        return 1
    answer.timings["ingest"] = ingest_s
    if as_json:
        sys.stdout.write(json.dumps(answer.to_dict(), indent=2) + "\n")
    else:
        _print_summary(out, answer)
    pipeline.close()
    return 0


async def _stream(pipeline: Pipeline, request: AnalyzeRequest, out: Console | None) -> Answer:
    cues_table: Table | None = None
    async for ev in pipeline.stream(request):
        if out is None:
            if isinstance(ev, DoneEvent):
                return ev.answer
            continue
        if isinstance(ev, LabelEvent):
            top = sorted(ev.scores.items(), key=lambda kv: -kv[1])[:3]
            out.print(f"[bold]emotion:[/bold] [green]{ev.label}[/green]  "
                      + "  ".join(f"{k} {v:.2f}" for k, v in top))
        elif isinstance(ev, CueEvent):
            if cues_table is None:
                cues_table = Table("modality", "cue", "start", "end", "strength", title="cues")
            c = ev.cue
            cues_table.add_row(c.modality, c.text, _t(c.start), _t(c.end), f"{c.strength:.2f}")
        elif isinstance(ev, TokenEvent):
            if cues_table is not None:
                out.print(cues_table)
                cues_table = None
                out.print("[bold]explanation:[/bold] ", end="")
            out.print(ev.text, end="", soft_wrap=True)
        elif isinstance(ev, DoneEvent):
            if cues_table is not None:
                out.print(cues_table)
            out.print()
            return ev.answer
    raise RuntimeError("pipeline ended without a done event")


def _print_summary(out: Console, answer: Answer) -> None:
    if not answer.cues:
        out.print("[yellow]no cues were perceived[/yellow]")
    t = answer.timings
    out.print(f"[dim]model: {answer.model}[/dim]")
    out.print(f"[dim]time to label {t.get('time_to_label_s', 0):.2f} s, total {t.get('total_s', 0):.2f} s "
              f"(ingest {t.get('ingest', 0):.2f} s)[/dim]")


def _t(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"
