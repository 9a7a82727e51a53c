"""The embed client: what a session token reaches (the datasets its user's
groups grant, their columns, rows, metadata and summaries)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypedDict, cast

import httpx

from . import errors, models
from ._http import Secret, Transport, lines, segment

__all__ = ["SiloSession", "RowStream", "Row", "FetchResult"]

NDJSON = "application/x-ndjson"

#: One streamed row: column name -> value, in column order.
Row = dict[str, Any]


class FetchResult(TypedDict):
    """A whole fetch: ``columns`` in order, and ``rows``, each a list of
    values in column order (numbers, strings, booleans, nulls, embedded JSON).

    Declared here rather than taken from :mod:`.models`: the OpenAPI
    document types each cell as an object, which cells are not.
    """

    columns: list[str]
    rows: list[list[Any]]


def _fetch_body(columns: Sequence[str] | None, limit: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if columns is not None:
        if isinstance(columns, str):
            raise TypeError("columns is a list of names, not a string")
        body["columns"] = list(columns)
    if limit is not None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        body["limit"] = limit
    return body


class RowStream:
    """Rows of a fetch as they arrive (NDJSON), as an async iterator.

    The request starts on the first ``__anext__``. An error the server sends
    after the stream began (its last line, ``{"error": {...}}``) raises its
    :class:`~silo_client.SiloError` (with ``streamed`` true) after the rows
    before it. Leaving early? Use ``async with session.stream(...) as rows``
    or call :meth:`aclose` to release the connection at once.
    """

    def __init__(self, transport: Transport, path: str, body: dict[str, Any]) -> None:
        self._t = transport
        self._path = path
        self._body = body
        self._rows: AsyncIterator[Row] | None = None
        self._response: httpx.Response | None = None
        self._closed = False

    def __aiter__(self) -> RowStream:
        return self

    async def __anext__(self) -> Row:
        if self._closed:
            raise StopAsyncIteration
        if self._rows is None:
            self._rows = self._read()
        try:
            return await self._rows.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def _read(self) -> AsyncIterator[Row]:
        response = await self._t.open_stream(
            "POST", self._path, json_body=self._body, accept=NDJSON
        )
        self._response = response
        media = response.headers.get("content-type", "").split(";")[0].strip()
        if media == "application/json":
            # A server that answered one document: the same rows.
            doc = json.loads(await response.aread())
            for values in doc["rows"]:
                yield dict(zip(doc["columns"], values, strict=True))
            return
        # A line shaped like the error object is held back until the next
        # line shows it was a row (a lone column named `error`): the server's
        # error line is always the stream's last.
        held: tuple[str, str] | None = None
        held_row: Row | None = None
        async for line in lines(response):
            try:
                obj = json.loads(line)
            except ValueError:
                raise errors.SiloError(
                    response.status_code, None, "the stream sent a line that is not JSON",
                    streamed=True,
                ) from None
            if not isinstance(obj, dict):
                raise errors.SiloError(
                    response.status_code, None, "the stream sent a line that is not an object",
                    streamed=True,
                )
            if held_row is not None:
                yield held_row
                held, held_row = None, None
            detail = errors.error_detail(obj)
            if detail is not None:
                held, held_row = detail, obj
                continue
            yield obj
        if held is not None:
            raise self._t.stream_error(*held)

    async def aclose(self) -> None:
        """Stops reading and releases the connection."""
        self._closed = True
        rows, self._rows = self._rows, None
        if rows is not None:
            await cast(Any, rows).aclose()
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> RowStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SiloSession:
    """An embed user's client, with the session token the backend minted
    (``Silo.sessions.create``). Use as ``async with SiloSession(url, token)``,
    or get one from :meth:`Silo.as_session` (which shares its connections)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: httpx.Timeout | float | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._t = Transport(
            base_url, Secret(token), client=http_client, timeout=timeout, transport=transport
        )

    @classmethod
    def _over(cls, transport: Transport) -> SiloSession:
        self = cls.__new__(cls)
        self._t = transport
        return self

    @property
    def base_url(self) -> str:
        return self._t.base_url

    async def datasets(self) -> list[models.EmbedDataset]:
        """The datasets this session may use."""
        return cast("list[models.EmbedDataset]", await self._t.call("GET", "/v1/embed/datasets"))

    async def describe(self, id: str) -> list[models.ColumnInfo]:
        """The columns of dataset ``id`` this session may see."""
        return cast(
            "list[models.ColumnInfo]",
            await self._t.call("GET", f"/v1/embed/datasets/{segment(id)}/describe"),
        )

    async def fetch(
        self, id: str, columns: Sequence[str] | None = None, limit: int | None = None
    ) -> FetchResult:
        """The rows this session may see, whole: ``{"columns": [...], "rows":
        [[...], ...]}`` (decimals as strings, dates ISO 8601, bytes hex)."""
        return cast(
            FetchResult,
            await self._t.call(
                "POST",
                f"/v1/embed/datasets/{segment(id)}/fetch",
                json_body=_fetch_body(columns, limit),
            ),
        )

    def stream(
        self, id: str, columns: Sequence[str] | None = None, limit: int | None = None
    ) -> RowStream:
        """The rows this session may see, one ``dict`` per row as they
        arrive: ``async for row in session.stream(id): ...``."""
        return RowStream(
            self._t, f"/v1/embed/datasets/{segment(id)}/fetch", _fetch_body(columns, limit)
        )

    async def metadata(self, id: str) -> models.Payload:
        """The dataset's ``silo.metadata.v1`` document as this session sees
        it: statistics under its privacy policy, never rows."""
        return cast(
            models.Payload,
            await self._t.call("GET", f"/v1/embed/datasets/{segment(id)}/metadata"),
        )

    async def summary(self, id: str) -> models.Summary:
        """A plain-language summary of the dataset's metadata (the server's
        LLM, or its built-in summarizer)."""
        return cast(
            models.Summary,
            await self._t.call("POST", f"/v1/embed/datasets/{segment(id)}/summary"),
        )

    async def aclose(self) -> None:
        await self._t.aclose()

    async def __aenter__(self) -> SiloSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SiloSession(base_url={self.base_url!r}, token='***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a SiloSession is not picklable")
