"""Upload bodies: bytes, a path, a binary file or an async iterable of
bytes, streamed in chunks with progress reported as they are handed to the
connection."""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any, Union

import anyio
import anyio.to_thread

__all__ = ["UploadSource", "ProgressCallback", "Body", "prepare", "CSV", "NDJSON"]

CSV = "text/csv"
NDJSON = "application/x-ndjson"
DEFAULT_CHUNK = 256 * 1024

#: What ``datasets.upload`` takes. A ``str`` is a *path*; pass ``bytes`` for contents.
UploadSource = Union[
    bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes], AsyncIterable[bytes]
]
#: ``on_progress(sent, total)``; ``total`` is ``None`` when the size is unknown.
#: May be a coroutine function.
ProgressCallback = Callable[[int, "int | None"], "None | Awaitable[None]"]

_BY_SUFFIX = {".csv": CSV, ".ndjson": NDJSON, ".jsonl": NDJSON}
_SHORT = {"csv": CSV, "ndjson": NDJSON, "jsonl": NDJSON}


def _media_type(content_type: str | None, name: str | None, head: bytes | None) -> str:
    if content_type:
        return _SHORT.get(content_type.lower(), content_type)
    if name:
        suffix = os.path.splitext(name)[1].lower()
        if suffix in _BY_SUFFIX:
            return _BY_SUFFIX[suffix]
    if head is not None:
        # NDJSON records are objects; a CSV header is not.
        return NDJSON if head.lstrip()[:1] == b"{" else CSV
    raise ValueError(
        "cannot tell the upload's format: pass content_type='text/csv' or "
        "'application/x-ndjson' (or a path ending in .csv, .ndjson or .jsonl)"
    )


@dataclass
class Body:
    """A prepared upload body."""

    content_type: str
    total: int | None
    chunks: Callable[[], AsyncIterator[bytes]]

    def stream(self, on_progress: ProgressCallback | None) -> AsyncIterator[bytes]:
        return _reporting(self.chunks(), self.total, on_progress)


async def _report(on_progress: ProgressCallback | None, sent: int, total: int | None) -> None:
    if on_progress is None:
        return
    result = on_progress(sent, total)
    if inspect.isawaitable(result):
        await result


async def _reporting(
    chunks: AsyncIterator[bytes], total: int | None, on_progress: ProgressCallback | None
) -> AsyncIterator[bytes]:
    sent = 0
    await _report(on_progress, 0, total)
    async for chunk in chunks:
        if not chunk:
            continue
        yield chunk
        # Resumed: the connection has taken the chunk.
        sent += len(chunk)
        await _report(on_progress, sent, total)


def _from_bytes(data: bytes, chunk_size: int) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])

    return chunks


def _from_path(path: str, chunk_size: int) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        async with await anyio.open_file(path, "rb") as f:
            while chunk := await f.read(chunk_size):
                yield chunk

    return chunks


def _from_file(f: IO[bytes], chunk_size: int) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        while True:
            if isinstance(f, io.BytesIO):
                chunk = f.read(chunk_size)
            else:
                chunk = await anyio.to_thread.run_sync(f.read, chunk_size)
            if not chunk:
                return
            if not isinstance(chunk, bytes | bytearray):
                raise TypeError("upload: open the file in binary mode ('rb')")
            yield bytes(chunk)

    return chunks


def _remaining(f: IO[bytes]) -> int | None:
    try:
        if not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(here)
        return max(0, end - here)
    except (OSError, ValueError, AttributeError):
        return None


def prepare(
    source: Any, content_type: str | None = None, chunk_size: int = DEFAULT_CHUNK
) -> Body:
    """Works out an upload's media type, size and chunks."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        media = _media_type(content_type, None, data[:64])
        return Body(media, len(data), _from_bytes(data, chunk_size))
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        size = os.stat(path).st_size  # FileNotFoundError for a missing path
        return Body(_media_type(content_type, path, None), size, _from_path(path, chunk_size))
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        media = _media_type(content_type, name if isinstance(name, str) else None, None)
        return Body(media, _remaining(source), _from_file(source, chunk_size))
    if isinstance(source, AsyncIterable):
        media = _media_type(content_type, None, None)
        iterable = source

        def chunks() -> AsyncIterator[bytes]:
            return aiter(iterable)

        return Body(media, None, chunks)
    raise TypeError(
        "upload takes bytes, a path, a binary file or an async iterable of bytes, "
        f"not {type(source).__name__}"
    )
