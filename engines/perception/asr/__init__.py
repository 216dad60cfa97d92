"""Speech recognition of the clip's own audio (faster-whisper + Whisper base, offline) and timed verbal cues.

Importing this package loads no model: `AsrStage` (via `Recognizer`) imports faster-whisper and joins the model.
"""

from engines.perception.asr.recognizer import AsrResult, Recognizer
from engines.perception.asr.stage import (
    AsrStage,
    asr_request_error,
    english_text,
    resolve_transcript,
    wants_asr,
)
from engines.perception.asr.timed_cues import transcript_cues

__all__ = ["AsrResult", "AsrStage", "Recognizer", "asr_request_error", "english_text", "resolve_transcript",
           "transcript_cues", "wants_asr"]
