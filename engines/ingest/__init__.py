"""Media ingest: an uploaded clip (bytes or a path) becomes a Clip of sampled frames, a timeline and 16 kHz audio.

`detect_format` names the container from magic bytes; `ingest` checks every budget and decodes in a warm,
killable worker process; `warmup` starts those workers ahead of the first request.
"""

from engines.ingest.api import content_hash, ingest, warmup
from engines.ingest.formats import detect_format
from engines.ingest.pool import shutdown

__all__ = ["content_hash", "detect_format", "ingest", "shutdown", "warmup"]
