"""Receive a multipart upload straight from the request stream onto disk.

The body is parsed incrementally (python-multipart's streaming parser) as it arrives, so
memory stays bounded whatever the size: at most one socket chunk plus a small write
buffer per upload. The size cap is enforced on every chunk, and the container type is
checked by magic bytes (``dfd.sniff``, the sniffer the worker's probe uses too) on the
first bytes of the file, so an oversized or
wrong upload is refused as soon as that is known, not after the whole body arrived.
The file is written as ``<job id>.part`` and renamed when complete; on any refusal it
is deleted.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from dfd.errors import TooLargeError, UnsupportedMediaError
from dfd.sniff import HEAD_BYTES, Sniffed, sniff
from gateway.errors import InvalidRequestError

FIELD = b"file"
SNIFF_BYTES = HEAD_BYTES
# Multipart framing and small extra fields allowed on top of the file size cap.
BODY_OVERHEAD_BYTES = 1 << 20
# Disk writes are batched and done off the event loop.
WRITE_BUFFER_BYTES = 1 << 20
# A text field beside the file (callback_url) is kept in memory up to this size.
TEXT_FIELD_MAX_BYTES = 8192


@dataclass(frozen=True)
class SavedUpload:
    path: Path
    filename: str | None
    size: int
    mime: str
    fields: dict[str, str]  # the small text fields beside the file (callback_url)


def sniff_container(head: bytes) -> Sniffed:
    """The video or audio container the file's first bytes name.

    Raises:
        UnsupportedMediaError: anything that is neither.
    """
    sniffed = sniff(head)
    if not sniffed.may_hold_media or sniffed.mime is None:
        raise UnsupportedMediaError(
            "upload: expected a video (mp4, mov, webm, mkv, avi, mpeg-ps/ts, flv, 3gp, ogg, "
            "asf, y4m, animated gif/webp) or an audio file (wav, flac, mp3, m4a, ogg), got "
            f"{sniffed.detail}"
        )
    return sniffed


def safe_filename(raw: bytes | None) -> str | None:
    if not raw:
        return None
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return name or None


class PartEvents:
    """The multipart parser's callbacks, recorded in order as ``("begin", filename)``,
    ``("data", bytes)`` and ``("end", None)`` for each ``file`` part, so the I/O is done
    between parser writes; the small text fields beside the files are kept in ``fields``.

    ``what`` names the request in errors (``upload``, ``batch``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[tuple[str, object]] = []
        self.fields: dict[str, str] = {}
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._text: bytearray | None = None
        self._text_name = ""
        self._in_file = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition"))
        if params.get(b"name") == FIELD:
            self._in_file = True
            self.items.append(("begin", safe_filename(params.get(b"filename"))))
        elif params.get(b"name") and b"filename" not in params:
            self._text, self._text_name = bytearray(), params[b"name"].decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            if len(self._text) + end - start > TEXT_FIELD_MAX_BYTES:
                raise TooLargeError(
                    f"{self.what}: expected field {self._text_name!r} of at most "
                    f"{TEXT_FIELD_MAX_BYTES} bytes, got more"
                )
            self._text.extend(data[start:end])
        elif self._in_file:
            self.items.append(("data", data[start:end]))

    def _part_end(self) -> None:
        if self._text is not None:
            self.fields[self._text_name] = self._text.decode("utf-8", "replace")
            self._text = None
        if self._in_file:
            self._in_file = False
            self.items.append(("end", None))

    def take(self) -> list[tuple[str, object]]:
        items, self.items = self.items, []
        return items


class _File:
    """The one ``file`` part of a single upload as its events arrive (a later ``file``
    part is ignored); its bytes wait in ``pending`` until written."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.seen = False
        self.open = False
        self.done = False
        self.filename: str | None = None

    def take_events(self, events: PartEvents) -> None:
        for kind, value in events.take():
            if kind == "begin" and not self.seen:
                self.seen = self.open = True
                self.filename = value if isinstance(value, str) else None
            elif kind == "data" and self.open:
                assert isinstance(value, bytes)
                self.size += len(value)
                if self.size <= self.max_bytes:
                    self.pending.append(value)
                    self.pending_bytes += len(value)
            elif kind == "end" and self.open:
                self.open = False
                self.done = True

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return data


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    dest_dir: Path,
    stem: str,
    max_bytes: int,
) -> SavedUpload:
    """Stream the multipart body in ``chunks`` into ``dest_dir/<stem><suffix>``.

    Raises:
        InvalidRequestError: not multipart, malformed, or no non-empty ``file`` field.
        TooLargeError: the file is over ``max_bytes`` (raised as soon as it is).
        UnsupportedMediaError: the first bytes are not a supported video container.
    """
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequestError(
            f"upload: expected a multipart/form-data body with a 'file' field, got {content_type or 'no content type'}"
        )
    events = PartEvents("upload")
    parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    dest_dir.mkdir(parents=True, exist_ok=True)
    part_path = dest_dir / f"{stem}.part"
    file = _File(max_bytes)
    head = bytearray()
    sniffed: Sniffed | None = None
    body_bytes = 0
    out = None
    done = False
    try:
        out = await anyio.to_thread.run_sync(lambda: open(part_path, "wb"))  # noqa: SIM115
        async for chunk in chunks:
            body_bytes += len(chunk)
            if body_bytes > max_bytes + BODY_OVERHEAD_BYTES:
                raise TooLargeError(
                    f"upload: expected a body of at most {max_bytes} bytes, got more"
                )
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidRequestError(
                    f"upload: expected a well-formed multipart body, got {exc}"
                ) from exc
            file.take_events(events)
            if file.size > max_bytes:
                raise TooLargeError(
                    f"upload: expected a file of at most {max_bytes} bytes, got more"
                )
            if sniffed is None and file.pending_bytes:
                head.extend(file.take())
                if len(head) >= SNIFF_BYTES or file.done:
                    sniffed = sniff_container(bytes(head))
                    await anyio.to_thread.run_sync(out.write, bytes(head))
            elif file.pending_bytes >= WRITE_BUFFER_BYTES:
                await anyio.to_thread.run_sync(out.write, file.take())
        try:
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidRequestError(
                f"upload: expected a complete multipart body, got {exc}"
            ) from exc
        file.take_events(events)
        if not file.seen:
            raise InvalidRequestError("upload: expected a multipart field named 'file', got none")
        if file.size == 0:
            raise InvalidRequestError("upload: expected a non-empty file, got 0 bytes")
        if sniffed is None:
            head.extend(file.take())
            sniffed = sniff_container(bytes(head))
            await anyio.to_thread.run_sync(out.write, bytes(head))
        if file.pending_bytes:
            await anyio.to_thread.run_sync(out.write, file.take())
        await anyio.to_thread.run_sync(out.close)
        final = dest_dir / f"{stem}{sniffed.suffix}"
        os.replace(part_path, final)
        done = True
        return SavedUpload(final, file.filename, file.size, sniffed.mime or "", events.fields)
    finally:
        if out is not None and not out.closed:
            out.close()
        if not done:
            part_path.unlink(missing_ok=True)
