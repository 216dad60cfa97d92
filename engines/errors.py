"""Typed errors raised by the engines; the server maps `http_status` and `type` to its JSON envelope.

Messages are for users: they say what was wrong and what to do, with no paths, stack traces or addresses.
"""

from __future__ import annotations


class XemoError(Exception):
    type: str = "error"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(XemoError):
    type = "bad_request"
    http_status = 400


class MediaError(XemoError):
    """Base of everything ingest rejects; counted as outcome=bad_media unless a subclass says otherwise."""

    type = "bad_media"
    http_status = 422


class UnsupportedFormat(MediaError):
    type = "unsupported_format"
    http_status = 415


class TooLarge(MediaError):
    type = "too_large"
    http_status = 413


class TooLong(MediaError):
    type = "too_long"
    http_status = 422


class TooManyPixels(MediaError):
    type = "too_many_pixels"
    http_status = 422


class CorruptMedia(MediaError):
    type = "corrupt_media"
    http_status = 422


class NoStreams(MediaError):
    type = "no_streams"
    http_status = 422


class DecodeTimeout(MediaError):
    type = "decode_timeout"
    http_status = 422


class ModelError(XemoError):
    """A model, checkpoint or runtime that cannot be loaded or used (operator error, not client error)."""

    type = "model_error"
    http_status = 500


class CheckpointMismatch(ModelError):
    type = "checkpoint_mismatch"


class ArtifactError(ModelError):
    """An exported artefact (ONNX graph, TensorRT engine, manifest) that is missing, corrupted or mismatched."""

    type = "artifact_error"


class RuntimeNotReady(ModelError):
    """The configured runtime is not the one actually active (e.g. ONNX Runtime fell back to CPU)."""

    type = "runtime_not_ready"
    http_status = 503


class Overloaded(XemoError):
    type = "overloaded"
    http_status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Timeout(XemoError):
    type = "timeout"
    http_status = 504


class Cancelled(XemoError):
    type = "cancelled"
    http_status = 499
