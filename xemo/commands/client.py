"""`xemo client analyze URL CLIP`: one request to a running server through xemo.client; the answer as JSON.

Exit codes: 0 answered, 1 the server refused or failed the request (its error envelope on stderr), 2 bad input or
no server at that address.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from xemo.client import ApiError, Client


def analyze(url: str, clip: Path | None, audio: Path | None, transcript: str | None, labels: str | None,
            api_key: str | None, stream: bool, timeout: float, asr: bool | None = None) -> int:
    for p in (clip, audio):
        if p is not None and not p.is_file():
            print(f"error: no such file: {p}", file=sys.stderr)
            return 2
    if clip is None and audio is None and not (transcript or "").strip():
        print("error: give a clip, --audio or --transcript", file=sys.stderr)
        return 2
    try:
        with Client(url, api_key=api_key, timeout=timeout) as c:
            if stream:
                for ev in c.stream(video=clip, audio=audio, transcript=transcript, labels=labels, asr=asr):
                    sys.stdout.write(ev.model_dump_json(exclude_unset=True) + "\n")
                    sys.stdout.flush()
            else:
                answer = c.analyze(video=clip, audio=audio, transcript=transcript, labels=labels, asr=asr)
                sys.stdout.write(json.dumps(answer.model_dump(mode="json", exclude_unset=True), indent=2) + "\n")
    except ApiError as e:
        print(f"error ({e.type}, HTTP {e.status}): {e.message}", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(f"error: cannot reach {url}: {e}", file=sys.stderr)
        return 2
    return 0
