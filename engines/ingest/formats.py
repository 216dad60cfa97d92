"""Container detection by magic bytes and the allow-list of demuxers we are willing to open.

The name and Content-Type of an upload are never trusted: only its first bytes. Anything that is not one of the
allowed containers (HLS playlists, ffconcat scripts, image sequences, text renamed .mp4, ...) is refused here,
before any demuxer sees it, so no container can make FFmpeg open other files or URLs.
"""

from __future__ import annotations

from engines.errors import UnsupportedFormat

# format -> the FFmpeg demuxer we force when opening it (PyAV `format=`)
DEMUXERS: dict[str, str] = {
    "mp4": "mov",
    "webm": "matroska",
    "mkv": "matroska",
    "avi": "avi",
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "mp3": "mp3",
}
AUDIO_ONLY = frozenset({"wav", "flac", "ogg", "mp3"})
# Demuxer options that keep a container inside its own bytes: local file protocol only, no external references.
DEMUXER_OPTIONS: dict[str, dict[str, str]] = {
    "mov": {"enable_drefs": "0", "use_absolute_path": "0"},
}
SAFE_OPTIONS = {"protocol_whitelist": "file"}

HEAD_BYTES = 64  # enough for every check below
# ISO-BMFF brands that are still images, not video
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"jp2 ", b"crx "}
# QuickTime files may start with one of these atoms instead of `ftyp`
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
ACCEPTED = "mp4/mov, webm, mkv, avi, wav, flac, ogg or mp3"


def detect_format(head: bytes) -> str:
    """Name the container of an upload from its first bytes; raise UnsupportedFormat for anything else."""
    if not head:
        raise UnsupportedFormat("the upload is empty; send a video or audio file")
    if len(head) < 12:
        raise UnsupportedFormat(f"the upload is only {len(head)} bytes; send a whole {ACCEPTED} file")
    box = head[4:8]
    if box == b"ftyp":
        if head[8:12] in _IMAGE_BRANDS:
            raise UnsupportedFormat("this is a still image (HEIF/AVIF), not a video; send " + ACCEPTED)
        return "mp4"
    if box in _QT_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM, told apart by the DocType string
        return "webm" if b"webm" in head[:HEAD_BYTES] else "mkv"
    if head[:4] in (b"RIFF", b"RF64", b"BW64"):
        if head[8:12] == b"WAVE":
            return "wav"
        if head[8:12] == b"AVI " and head[:4] == b"RIFF":
            return "avi"
        raise UnsupportedFormat("this RIFF file is neither WAV nor AVI; send " + ACCEPTED)
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or _is_mpeg_audio_frame(head):
        return "mp3"
    raise UnsupportedFormat(f"unrecognised file type; send {ACCEPTED} (detected from the content, not the name)")


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG-1/2/2.5 audio frame header (layers I-III); ADTS AAC (layer bits 00) is not one."""
    if head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3
