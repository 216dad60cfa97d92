"""The streaming multipart reader: fields and files parsed, limits enforced while the body streams in."""

from __future__ import annotations

import asyncio

import pytest

from engines.errors import BadRequest, TooLarge
from server.errors import UnsupportedContentType
from server.uploads import UploadLimits, check_content_length, read_multipart

BOUNDARY = "xemoBoundary123"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Chunks:
    """An async body source that counts how much of it the reader pulled."""

    def __init__(self, data: bytes, size: int = 1000) -> None:
        self.chunks = [data[i : i + size] for i in range(0, len(data), size)]
        self.pulled = 0

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for c in self.chunks:
            self.pulled += 1
            yield c


def read(data: bytes, limits: UploadLimits, ctype: str = CTYPE, size: int = 1000):
    src = Chunks(data, size)
    return asyncio.run(read_multipart(ctype, src.__aiter__(), limits)), src


def test_parses_files_and_fields_split_across_chunks() -> None:
    video = bytes(range(256)) * 40
    form, _ = read(
        body(part("video", video, "clip.mp4"), part("transcript", "héllo".encode()), part("labels", b"happy,sad")),
        UploadLimits(1 << 20, 1024),
        size=7,
    )
    assert form.files == {"video": video}
    assert form.fields == {"transcript": "héllo", "labels": "happy,sad"}


def test_oversize_file_is_refused_before_the_body_is_all_read() -> None:
    data = body(part("video", b"\0" * 200_000, "big.mp4"))
    src = Chunks(data, 1000)
    with pytest.raises(TooLarge):
        asyncio.run(read_multipart(CTYPE, src.__aiter__(), UploadLimits(50_000, 1024)))
    assert src.pulled < len(src.chunks) / 2  # stopped near the limit, not at the end


def test_declared_content_length_over_the_limit_is_refused_up_front() -> None:
    limits = UploadLimits(50_000, 1024)
    with pytest.raises(TooLarge):
        check_content_length({"content-length": str(limits.max_body_bytes + 1)}, limits)
    check_content_length({"content-length": "10"}, limits)
    with pytest.raises(BadRequest):
        check_content_length({"content-length": "lots"}, limits)


def test_oversize_text_field_and_bad_bodies() -> None:
    limits = UploadLimits(1 << 20, 100)
    with pytest.raises(TooLarge):
        read(body(part("transcript", b"a" * 500)), limits)
    with pytest.raises(UnsupportedContentType):
        read(b"{}", limits, ctype="application/json")
    with pytest.raises(BadRequest):
        read(b"--wrong\r\ngarbage", limits)
    with pytest.raises(BadRequest):
        read(body(part("video", b"1", "a"), part("video", b"2", "b")), limits)


class Receive:
    """ASGI `receive` for a body sent in `chunks` messages, then (optionally) nothing more for a long time."""

    def __init__(self, chunks: int, size: int = 1000, stall: bool = False) -> None:
        self.left, self.size, self.stall, self.calls = chunks, size, stall, 0

    async def __call__(self) -> dict:
        self.calls += 1
        if self.left == 0:
            await asyncio.sleep(3600)  # a client that stopped sending
        self.left -= 1
        return {"type": "http.request", "body": b"x" * self.size, "more_body": self.left > 0 or self.stall}


def settle(headers: dict[str, str], receive: Receive, started: bool = False, max_bytes: int = 10_000) -> bool:
    from server.uploads import settle_unread_body

    return asyncio.run(settle_unread_body(headers, receive, UploadLimits(max_bytes, 100), started))


def test_an_unread_body_is_drained_before_an_early_answer_when_that_is_bounded(monkeypatch) -> None:
    import server.uploads

    whole = Receive(5)
    assert settle({"content-length": "5000"}, whole) and whole.calls == 5  # read to its end, then answered
    assert settle({}, Receive(3))  # chunked: no declared length, still bounded by the limit
    # no draining: a body already partly parsed, a declared length over the limit, a client waiting for 100-continue
    for headers, started in (({}, True), ({"content-length": "999999999"}, False), ({"content-length": "x"}, False),
                             ({"expect": "100-continue"}, False)):
        untouched = Receive(5)
        assert not settle(headers, untouched, started) and untouched.calls == 0
    assert not settle({}, Receive(100))  # more than the limit: given up, the connection is closed instead
    monkeypatch.setattr(server.uploads, "DRAIN_S", 0.05)
    assert not settle({}, Receive(2, stall=True))  # a stalled client: given up after the time bound
