"""`xemo analyze`: one clip end to end with the configured profile, on the terminal or as JSON; many clips (a
directory, a glob or several paths) as JSONL with a progress bar; or a transcript alone (text only).

Exit codes: 0 done, 1 the clip (or some of the clips) failed, 2 nothing to analyse.
"""

from __future__ import annotations

import asyncio
import glob
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from engines.errors import XemoError
from engines.pipeline import Pipeline, build_pipeline
from engines.types import AnalyzeRequest, Answer, Clip, CueEvent, DoneEvent, LabelEvent, TokenEvent
from xemo.commands.preflight import preflight
from xemo.settings import Settings

MEDIA_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3",
                  ".m4a"}


def expand(args: list[str]) -> tuple[list[Path], bool]:
    """The clips named by the arguments (files, directories, globs), and whether that is a batch."""
    paths: list[Path] = []
    batch = len(args) > 1
    for a in args:
        p = Path(a)
        if p.is_dir():
            batch = True
            paths += sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in MEDIA_SUFFIXES)
        elif glob.has_magic(a):
            batch = True
            paths += sorted(Path(x) for x in glob.glob(a, recursive=True) if Path(x).is_file())
        else:
            paths.append(p)
    return list(dict.fromkeys(paths)), batch


def run(settings: Settings, clips: list[str], audio: Path | None, transcript: str | None, labels: str | None,
        as_json: bool, out_path: Path | None = None, asr: bool | None = None) -> int:
    from engines.perception.asr.stage import asr_request_error

    err = Console(stderr=True)
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    paths, batch = expand(clips)
    if msg := asr_request_error(settings.asr, asr, bool(paths) or audio is not None):
        err.print(f"[red]error:[/red] {msg.replace('asr: ', '--asr: ', 1)}")
        return 2
    if batch:
        if audio is not None or transcript is not None:
            err.print("[red]error:[/red] --audio and --transcript go with one clip, not a batch")
            return 2
        if not paths:
            err.print(f"[red]error:[/red] no media files match {' '.join(clips)}")
            return 2
        return preflight(settings) or _run_batch(settings, paths, label_list, err, out_path, asr)
    if not paths and not (transcript or "").strip():
        err.print("[red]error:[/red] nothing to analyse: give a clip, --audio or --transcript")
        return 2
    if rc := preflight(settings):  # before anything loads the LLM into this process
        return rc
    return _run_one(settings, paths[0] if paths else None, audio, transcript, label_list, as_json, err, asr)


def _load(settings: Settings, err: Console) -> Pipeline:
    with err.status(f"loading the {settings.profile} profile"):
        pipeline = build_pipeline(settings)
        pipeline.load()
        pipeline.warmup()
    return pipeline


def _ingest(settings: Settings, clip: Path | None, audio: Path | None) -> Clip:
    if clip is None and audio is None:
        return Clip.text_only()
    from engines.ingest import ingest  # imports the decoders: only when a clip is analysed

    return ingest(clip, audio, settings.ingest)


def _run_one(settings: Settings, clip: Path | None, audio: Path | None, transcript: str | None,
             label_list: list[str] | None, as_json: bool, err: Console, asr: bool | None = None) -> int:
    out = Console()
    try:
        pipeline = _load(settings, err)
        t0 = time.perf_counter()
        with err.status("ingesting the clip"):
            c = _ingest(settings, clip, audio)
        ingest_s = time.perf_counter() - t0
        request = AnalyzeRequest(clip=c, transcript=transcript, labels=label_list, asr=asr, received_at=t0)
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


def _run_batch(settings: Settings, paths: list[Path], label_list: list[str] | None, err: Console,
               out_path: Path | None, asr: bool | None = None) -> int:
    """One JSONL line per clip, in order, as each finishes: {"clip", "status": "ok", "answer"} or
    {"clip", "status": "error", "error": {"type", "message"}}."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        pipeline = _load(settings, err)
    except XemoError as e:
        err.print(f"[red]error ({e.type}):[/red] {e.message}")
        return 1
    sink: IO[str] = out_path.open("w", encoding="utf-8") if out_path else sys.stdout
    progress = Progress(TextColumn("[bold]analyse"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[last]}"), console=err)

    async def each() -> int:
        failed = 0
        task = progress.add_task("analyse", total=len(paths), last="")
        for path in paths:
            rec: dict[str, Any] = {"clip": str(path)}
            try:
                t0 = time.perf_counter()
                c = await asyncio.to_thread(_ingest, settings, path, None)
                ingest_s = time.perf_counter() - t0
                answer = await pipeline.analyze(AnalyzeRequest(clip=c, labels=label_list, asr=asr, received_at=t0))
                answer.timings["ingest"] = ingest_s
                rec.update(status="ok", answer=answer.to_dict())
            except XemoError as e:
                failed += 1
                rec.update(status="error", error={"type": e.type, "message": e.message})
            sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sink.flush()
            progress.update(task, advance=1, last=f"{path.name}: {rec['status']}")
        return failed

    try:
        with progress:
            failed = asyncio.run(each())
    finally:
        if out_path:
            sink.close()
        pipeline.close()
    if failed:
        err.print(f"[yellow]{failed} of {len(paths)} clips failed[/yellow]")
    return 1 if failed else 0


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
