"""Receive a multipart batch: several ``file`` parts streamed to disk, one file per job.

As :mod:`gateway.uploads`, the body is parsed as it arrives (python-multipart's
streaming parser) and memory stays bounded. Each ``file`` part is held to what a single
upload is (``max_upload_bytes``, a video or audio container by its magic bytes, not
empty); a part that breaks one of these is refused on its own, named by its index and
filename, its bytes discarded as they come and its file removed, and the other parts
go on. What concerns the whole request refuses all of it, every file removed: not
multipart, malformed, more than ``max_batch_items`` files, more than
``max_batch_upload_bytes`` in all, no ``file`` part.

Files are written as ``<job id>.part`` and renamed when complete, as single uploads are.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from dfd.errors import DfdError, TooLargeError
from dfd.sniff import Sniffed
from gateway.errors import InvalidRequestError
from gateway.uploads import (
    BODY_OVERHEAD_BYTES,
    SNIFF_BYTES,
    WRITE_BUFFER_BYTES,
    PartEvents,
    SavedUpload,
    sniff_container,
)


@dataclass(frozen=True)
class RefusedFile:
    """A ``file`` part refused on its own; the batch's other files go on."""

    index: int
    filename: str | None
    error: DfdError


@dataclass(frozen=True)
class BatchUpload:
    """What a multipart batch body held, in the order of its ``file`` parts."""

    saved: list[tuple[int, SavedUpload]]  # (index among the file parts, the file)
    refused: list[RefusedFile]
    fields: dict[str, str]  # the small text fields (options, callback_url)

    @property
    def files(self) -> int:
        return len(self.saved) + len(self.refused)

    def remove_all(self) -> None:
        """Delete every saved file (the request is refused after all)."""
        for _, upload in self.saved:
            upload.path.unlink(missing_ok=True)


@dataclass
class _Slot:
    """One ``file`` part while it arrives."""

    index: int
    stem: str
    filename: str | None
    part_path: Path
    out: IO[bytes] | None = None
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    sniffed: Sniffed | None = None
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    error: DfdError | None = None


class _Files:
    """The files of one batch as they are written."""

    def __init__(
        self,
        dest_dir: Path,
        new_stem: Callable[[], str],
        max_file_bytes: int,
        max_files: int,
    ) -> None:
        self.dest_dir = dest_dir
        self.new_stem = new_stem
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.current: _Slot | None = None
        self.saved: list[tuple[int, SavedUpload]] = []
        self.refused: list[RefusedFile] = []
        self.count = 0

    async def apply(self, kind: str, value: object) -> None:
        if kind == "begin":
            await self._begin(value if isinstance(value, str) else None)
        elif kind == "data" and self.current is not None:
            assert isinstance(value, bytes)
            await self._data(self.current, value)
        elif kind == "end" and self.current is not None:
            slot, self.current = self.current, None
            await self._end(slot)

    async def _begin(self, filename: str | None) -> None:
        if self.count >= self.max_files:
            raise InvalidRequestError(f"batch: expected at most {self.max_files} files, got more")
        stem = self.new_stem()
        slot = _Slot(self.count, stem, filename, self.dest_dir / f"{stem}.part")
        self.count += 1
        self.current = slot
        slot.out = await anyio.to_thread.run_sync(lambda: open(slot.part_path, "wb"))  # noqa: SIM115

    async def _data(self, slot: _Slot, data: bytes) -> None:
        slot.size += len(data)
        if slot.error is not None:
            return  # refused: the rest of the part is discarded as it comes
        if slot.size > self.max_file_bytes:
            await self._refuse(
                slot,
                TooLargeError(
                    f"upload: expected a file of at most {self.max_file_bytes} bytes, got more"
                ),
            )
            return
        slot.pending.append(data)
        slot.pending_bytes += len(data)
        try:
            if slot.sniffed is None:
                slot.head.extend(self._take(slot))
                if len(slot.head) >= SNIFF_BYTES:
                    slot.sniffed = sniff_container(bytes(slot.head))
                    await self._write(slot, bytes(slot.head))
            elif slot.pending_bytes >= WRITE_BUFFER_BYTES:
                await self._write(slot, self._take(slot))
        except DfdError as exc:
            await self._refuse(slot, exc)

    async def _end(self, slot: _Slot) -> None:
        if slot.error is not None:
            return
        try:
            if slot.size == 0:
                raise InvalidRequestError("upload: expected a non-empty file, got 0 bytes")
            if slot.sniffed is None:
                slot.sniffed = sniff_container(bytes(slot.head))
                await self._write(slot, bytes(slot.head))
            if slot.pending_bytes:
                await self._write(slot, self._take(slot))
        except DfdError as exc:
            await self._refuse(slot, exc)
            return
        assert slot.out is not None
        await anyio.to_thread.run_sync(slot.out.close)
        final = self.dest_dir / f"{slot.stem}{slot.sniffed.suffix}"
        os.replace(slot.part_path, final)
        self.saved.append(
            (
                slot.index,
                SavedUpload(final, slot.filename, slot.size, slot.sniffed.mime or "", {}),
            )
        )

    async def _refuse(self, slot: _Slot, error: DfdError) -> None:
        slot.error = error
        slot.pending.clear()
        slot.head.clear()
        if slot.out is not None:
            await anyio.to_thread.run_sync(slot.out.close)
        slot.part_path.unlink(missing_ok=True)
        self.refused.append(RefusedFile(slot.index, slot.filename, error))

    @staticmethod
    def _take(slot: _Slot) -> bytes:
        data = b"".join(slot.pending)
        slot.pending.clear()
        slot.pending_bytes = 0
        return data

    @staticmethod
    async def _write(slot: _Slot, data: bytes) -> None:
        assert slot.out is not None
        await anyio.to_thread.run_sync(slot.out.write, data)

    def abandon(self) -> None:
        """Remove every file of a refused request, complete or not."""
        slot = self.current
        if slot is not None:
            if slot.out is not None and not slot.out.closed:
                slot.out.close()
            slot.part_path.unlink(missing_ok=True)
        for _, upload in self.saved:
            upload.path.unlink(missing_ok=True)


async def receive_batch(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    dest_dir: Path,
    new_stem: Callable[[], str],
    *,
    max_file_bytes: int,
    max_total_bytes: int,
    max_files: int,
) -> BatchUpload:
    """Stream a multipart batch body in ``chunks`` into ``dest_dir``, one file per
    ``file`` part, each named ``new_stem()`` plus the container's suffix.

    Raises:
        InvalidRequestError: not multipart, malformed, no ``file`` part, or more than
            ``max_files`` of them.
        TooLargeError: the body is over ``max_total_bytes`` (raised as soon as it is),
            or a text field is over its cap.
    """
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequestError(
            "batch: expected a multipart/form-data body with 'file' parts, got "
            f"{content_type or 'no content type'}"
        )
    events = PartEvents("batch")
    parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    dest_dir.mkdir(parents=True, exist_ok=True)
    files = _Files(dest_dir, new_stem, max_file_bytes, max_files)
    body_bytes = 0
    done = False
    try:
        async for chunk in chunks:
            body_bytes += len(chunk)
            if body_bytes > max_total_bytes + BODY_OVERHEAD_BYTES:
                raise TooLargeError(
                    f"batch: expected files of at most {max_total_bytes} bytes in all, got more"
                )
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidRequestError(
                    f"batch: expected a well-formed multipart body, got {exc}"
                ) from exc
            for event, value in events.take():
                await files.apply(event, value)
        try:
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidRequestError(
                f"batch: expected a complete multipart body, got {exc}"
            ) from exc
        for event, value in events.take():
            await files.apply(event, value)
        if files.current is not None:
            raise InvalidRequestError("batch: expected a complete multipart body, got a cut part")
        if files.count == 0:
            raise InvalidRequestError(
                "batch: expected at least one multipart field named 'file', got none"
            )
        done = True
        return BatchUpload(files.saved, files.refused, events.fields)
    finally:
        if not done:
            files.abandon()
