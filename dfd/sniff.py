"""What a file is, from its first bytes: a small table of media magic numbers.

The one sniffer of the project: the gateway refuses an upload by its bytes (whatever its
name or declared type) with it, and the worker's probe says with it what came instead of
a video, so the two cannot disagree. Standard library only. Demuxing
(``dispatcher.probe``) decides the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD_BYTES = 1024
"""How many leading bytes `sniff` looks at."""


@dataclass(frozen=True)
class Sniffed:
    """What the leading bytes say.

    Attributes:
        kind: Short container name (``mp4``, ``mov``, ``matroska``, ``avi``, ``mpeg-ps``,
            ``mpeg-ts``, ``flv``, ``ogg``, ``asf``, ``y4m``, ``3gp``, animations ``gif`` and
            ``webp``; audio: ``m4a``, ``wav``, ``flac``, ``mp3``; other: ``image`` (stills),
            ``text``, ``empty``, ``unknown``).
        media: ``video`` (a container that may hold video, or an animation), ``audio``, or
            ``other``.
        detail: Words for messages ("a PNG image", "text").
        mime: The media type the container is stored and served as (``video/mp4``), or
            ``None`` for what is not media.
    """

    kind: str
    media: str
    detail: str
    mime: str | None = None

    @property
    def may_hold_video(self) -> bool:
        return self.media == "video"

    @property
    def may_hold_media(self) -> bool:
        """A video (animated images included) or an audio file: what dfd analyses."""
        return self.media in ("video", "audio")

    @property
    def suffix(self) -> str:
        """The file suffix a stored copy gets (``.mp4``); ``.bin`` for what is not media."""
        return _SUFFIXES.get(self.mime or "", ".bin")


_SUFFIXES = {
    "video/mp4": ".mp4", "video/quicktime": ".mov", "video/3gpp": ".3gp",
    "video/webm": ".webm", "video/x-matroska": ".mkv", "video/x-msvideo": ".avi",
    "video/mpeg": ".mpg", "video/mp2t": ".ts", "video/x-flv": ".flv", "video/ogg": ".ogv",
    "video/x-ms-asf": ".wmv", "video/x-yuv4mpeg": ".y4m", "audio/mp4": ".m4a",
    "audio/wav": ".wav", "audio/flac": ".flac", "audio/mpeg": ".mp3", "image/gif": ".gif",
    "image/webp": ".webp",
}  # fmt: skip


_MOV_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff(head: bytes) -> Sniffed:
    """Name the container (or what else) from a file's first bytes (`HEAD_BYTES` suffice)."""
    if not head:
        return Sniffed("empty", "other", "an empty file")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return Sniffed("mov", "video", "a QuickTime movie", "video/quicktime")
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return Sniffed("m4a", "audio", "an MPEG-4 audio file", "audio/mp4")
        if brand.startswith(b"3g"):
            return Sniffed("3gp", "video", "a 3GP file", "video/3gpp")
        if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
            return Sniffed("image", "other", "an AVIF/HEIF image")
        return Sniffed("mp4", "video", "an MPEG-4 file", "video/mp4")
    if head[4:8] in _MOV_ATOMS:
        return Sniffed("mov", "video", "a QuickTime movie", "video/quicktime")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # The EBML header's DocType (in the first few dozen bytes) tells WebM from Matroska.
        mime = "video/webm" if b"webm" in head[:64] else "video/x-matroska"
        return Sniffed("matroska", "video", "a Matroska/WebM file", mime)
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return Sniffed("avi", "video", "an AVI file", "video/x-msvideo")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        if b"ANIM" not in head[12:64]:
            return Sniffed("image", "other", "a still WebP image")
        return Sniffed("webp", "video", "an animated WebP", "image/webp")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return Sniffed("wav", "audio", "a WAV audio file", "audio/wav")
    if head.startswith(b"\x00\x00\x01\xba"):
        return Sniffed("mpeg-ps", "video", "an MPEG program stream", "video/mpeg")
    if head.startswith(b"\x00\x00\x01\xb3"):
        return Sniffed("mpeg-es", "video", "an MPEG video stream", "video/mpeg")
    if _sync_bytes(head, 188, 0):
        return Sniffed("mpeg-ts", "video", "an MPEG transport stream", "video/mp2t")
    if _sync_bytes(head, 192, 4):  # M2TS: a 4-byte timestamp before each packet
        return Sniffed("mpeg-ts", "video", "an MPEG transport stream (M2TS)", "video/mp2t")
    if head.startswith(b"FLV\x01"):
        return Sniffed("flv", "video", "a Flash video", "video/x-flv")
    if head.startswith(b"OggS"):
        return Sniffed("ogg", "video", "an Ogg file", "video/ogg")
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return Sniffed("asf", "video", "an ASF/WMV file", "video/x-ms-asf")
    if head.startswith(b"YUV4MPEG2 "):
        return Sniffed("y4m", "video", "a YUV4MPEG2 raw video", "video/x-yuv4mpeg")
    if head.startswith(b"fLaC"):
        return Sniffed("flac", "audio", "a FLAC audio file", "audio/flac")
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return Sniffed("mp3", "audio", "an MP3 audio file", "audio/mpeg")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "other", "a JPEG image")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "other", "a PNG image")
    if head.startswith((b"GIF87a", b"GIF89a")):
        # Analysed as video (an animation; a still GIF is a one-frame video).
        return Sniffed("gif", "video", "a GIF animation", "image/gif")
    if head.startswith(b"%PDF"):
        return Sniffed("pdf", "other", "a PDF document")
    if head.startswith(b"PK\x03\x04"):
        return Sniffed("zip", "other", "a ZIP archive")
    if _is_text(head):
        return Sniffed("text", "other", "text")
    return Sniffed("unknown", "other", f"unrecognised data (starts with {head[:8].hex(' ')})")


def _sync_bytes(head: bytes, packet: int, offset: int) -> bool:
    """The transport stream sync byte 0x47 at the start of every packet in ``head``
    (at least two packets)."""
    positions = range(offset, len(head), packet)
    return len(positions) >= 2 and all(head[p] == 0x47 for p in positions[:4])


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the head is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\r\n\t\f" for c in text)
