"""`xemo probe`: show what ingest sees in a clip (container, duration, streams, sampled frame times)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from engines.errors import XemoError
from xemo.settings import Settings


def run(settings: Settings, clip: Path, audio: Path | None, as_json: bool) -> int:
    from engines.ingest import ingest  # imports numpy and the worker pool only when a clip is probed

    try:
        c = ingest(clip, audio, settings.ingest)
    except XemoError as e:
        # One line a user can act on, no traceback; exit code 1 (2 is the CLI's usage/config error).
        print(f"error ({e.type}): {e.message}", file=sys.stderr)
        return 1
    data = c.probe_dict()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(_readable(data, c.sha256))
    return 0


def _readable(d: dict[str, Any], sha: str) -> str:
    lines = [f"container   {d['container']}", f"duration    {d['duration_s']:.3f} s"]
    v = d["video"]
    if v:
        rot = f", rotated {v['rotation']}°" if v.get("rotation") else ""
        lines.append(f"video       {v['width']}x{v['height']} {v['codec']} {v['fps']:g} fps, {v['frames']} frames{rot}")
    else:
        lines.append("video       none")
    a = d["audio"]
    if a:
        src = f"{a['codec']} {a['source_channels']} ch {a['source_sample_rate']} Hz"
        lines.append(f"audio       {src} -> mono {a['sample_rate']} Hz, {a['seconds']:.3f} s")
    else:
        lines.append("audio       none")
    times = ", ".join(f"{t:.2f}" for t in d["frame_times"])
    if d["frame_times"] or not d["timeline_frames"]:
        lines.append(f"frames      {len(d['frame_times'])} at [{times}] s")
    else:
        lines.append("frames      none uniform (this profile decodes only the timeline)")
    lines.append(f"timeline    {d['timeline_frames']} frames")
    lines.append(f"sha256      {sha}")
    return "\n".join(lines)
