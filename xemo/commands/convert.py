"""`xemo convert-checkpoint`: the released XEmoGPT checkpoint -> a self-contained serving bundle (bundle.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engines.errors import XemoError
from xemo.settings import Settings


def run(settings: Settings, out: Path, gguf: bool) -> int:
    from engines.xemogpt.bundle import write_bundle

    try:
        manifest = write_bundle(settings.xemogpt, out, gguf)
    except XemoError as e:
        sys.stderr.write(f"error ({e.type}): {e.message}\n")
        return 1
    summary = {k: manifest[k] for k in ("llm_hidden", "lora", "report", "files", "convert_s")}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(f"bundle written to {out}; serve it with `xemogpt: {{bundle: {out}}}`\n")
    if gguf and "gguf_error" in manifest:
        sys.stderr.write(manifest["gguf_error"] + "\n")
        return 3  # the bundle is usable with the transformers backend; the GGUF part was asked for and is absent
    return 0
