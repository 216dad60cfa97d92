"""Time to label, first token and full answer of the lite server, served warm, one request at a time.

It starts one `xemo serve` process on 127.0.0.1 (the default settings), waits until it is ready, and streams each
dev clip of ../shared/samples/dev (skipped when absent) over SSE with its transcript: the manifest's, else what
the server's ASR heard on an unmeasured first request, given back as the transcript, so no measured request runs
ASR. The clips are sent in turn, `--warm` unmeasured rounds over all of them, then `--runs` measured rounds, so
no request follows its own repeat: the LLM's prefix cache would otherwise still hold that request's whole prompt
and its label step would cost almost nothing (a client does not send one clip twice in a row, and the result
cache answers one that does). Times are from sending the request to the event, as a client sees them (the upload
included). Writes bench/results/ttl.json; recognised text is not kept in it.

    .venv/bin/python bench/ttl.py [--runs 3] [--out bench/results/ttl.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import real_clips  # noqa: E402
from load import stamp  # noqa: E402
from servers import ServerProcess  # noqa: E402  (tests/servers.py: a real server process)

from xemo.client import AsyncClient  # noqa: E402


async def timed(client: AsyncClient, video: bytes, transcript: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    await stamp(client.stream(video=video, transcript=transcript, temperature=0), time.perf_counter(), rec,
                keep_answer=True)
    return rec


def p50(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def stage_times(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: p50([r[k] for r in rows if k in r]) for k in rows[-1]}


async def run(url: str, clips: list[Any], runs: int, warm: int) -> list[dict[str, Any]]:
    async with AsyncClient(url, timeout=300, max_retries=0) as client:
        sent = []
        for rc in clips:
            video = rc.path.read_bytes()
            transcript = rc.transcript
            source = "manifest"
            if not transcript:
                heard = (await timed(client, video, None))["answer"].transcript
                transcript = (heard.english or heard.text) if heard is not None else None
                source = "asr, unmeasured first request"
            sent.append((rc, video, transcript, source if transcript else None))
        for _ in range(warm):
            for _, video, transcript, _ in sent:
                await timed(client, video, transcript)
        recs: dict[str, list[dict[str, Any]]] = {rc.id: [] for rc, *_ in sent}
        for _ in range(runs):
            for rc, video, transcript, _ in sent:
                recs[rc.id].append(await timed(client, video, transcript))
    out = []
    for rc, _, _, source in sent:
        mine = recs[rc.id]
        row = {"clip": rc.id, "transcript_from": source,
               **{k: p50([r[k] for r in mine]) for k in ("label_s", "ttft_s", "e2e_s")},
               # the server's own stage times (median per stage), to see where the time to label goes
               "server_timings_s": stage_times([r["answer"].timings.model_dump(exclude_none=True) for r in mine])}
        out.append(row)
        print(f"{rc.id:20} label {row['label_s']:.3f}  first token {row['ttft_s']:.3f}  "
              f"done {row['e2e_s']:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="measured rounds over the clips (each clip's median is kept)")
    ap.add_argument("--warm", type=int, default=1, help="unmeasured rounds over the clips first")
    ap.add_argument("--samples", type=Path, default=real_clips.SAMPLES)
    ap.add_argument("--note", default="", help="what else shared the machine, for the JSON")
    ap.add_argument("--out", type=Path, default=real_clips.RESULTS / "ttl.json")
    args = ap.parse_args()
    clips = [rc for rc in real_clips.listing(args.samples) if rc.path.parent.name == "dev"]
    if not clips:
        print(f"skipped: no dev clips under {args.samples}")
        return
    with tempfile.TemporaryDirectory() as d:
        server = ServerProcess({}, Path(d) / "server.log")
        try:
            server.wait_ready(timeout=600)
            rows = asyncio.run(run(server.url, clips, args.runs, args.warm))
        finally:
            server.stop()
    summary = {k: p50([r[k] for r in rows]) for k in ("label_s", "ttft_s", "e2e_s")}
    summary["e2e_max_s"] = max(r["e2e_s"] for r in rows)
    print(f"p50 over clips: time to label {summary['label_s']} s, first token {summary['ttft_s']} s, "
          f"full answer {summary['e2e_s']} s (max {summary['e2e_max_s']} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "lite server, default settings, warm, one request at a time, SSE, times as the client sees them",
        "machine": {"cores": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()], "note": args.note},
        "order": "round robin over the clips: no request follows its own repeat",
        "runs_per_clip": args.runs, "warm_per_clip": args.warm, "p50_over_clips": summary, "clips": rows,
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
