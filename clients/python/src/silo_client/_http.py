"""The transport under both clients: one ``httpx.AsyncClient``, a bearer
credential that never shows in ``repr``/``str``, and JSON calls whose non-2xx
answers raise typed errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from . import errors

__all__ = ["Secret", "Transport", "segment"]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)
USER_AGENT = "silo-client-python/0.1.0"


class Secret:
    """A credential: its value only leaves through :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("the credential is empty")
        self._value = value.strip()

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with the credential (if it appears) masked."""
        return text.replace(self._value, "***") if self._value in text else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a credential is not picklable")


class _Bearer(httpx.Auth):
    """``Authorization: Bearer …`` on every request; redacted in ``repr``."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._secret.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "_Bearer('***')"


def segment(value: str) -> str:
    """One path segment, percent-encoded (ids may hold ``/``, ``?``, ...)."""
    if not isinstance(value, str) or value == "":
        raise ValueError("an id must be a non-empty string")
    return quote(value, safe="")


def _base_url(url: str) -> str:
    url = str(url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    return url


class Transport:
    """Requests against one Silo with one credential."""

    def __init__(
        self,
        base_url: str,
        secret: Secret,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        self.base_url = _base_url(base_url)
        self.secret = secret
        self._auth = _Bearer(secret)
        self._owns = client is None
        self._client = client or httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            transport=transport,
        )

    def with_secret(self, secret: Secret) -> Transport:
        """The same connection pool, another credential (not owning the pool)."""
        return Transport(self.base_url, secret, client=self._client)

    async def aclose(self) -> None:
        if self._owns:
            await self._client.aclose()

    def url(self, path: str) -> str:
        return self.base_url + path

    def _error(self, response: httpx.Response) -> errors.SiloError:
        err = errors.from_response(response)
        err.message = self.secret.scrub(err.message)
        err.args = (err.status, err.code, err.message)
        return err

    def stream_error(self, code: str, message: str) -> errors.SiloError:
        return errors.from_stream_line(code, self.secret.scrub(message))

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Sends a request; a non-2xx answer raises its :class:`SiloError`."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        response = await self._client.request(
            method,
            self.url(path),
            content=content,
            params=params,
            headers=hdrs,
            auth=self._auth,
        )
        if not response.is_success:
            raise self._error(response)
        return response

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """A JSON call: the decoded body (``None`` for 204)."""
        response = await self.send(method, path, json_body=json_body, params=params)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def open_stream(
        self, method: str, path: str, *, json_body: Any, accept: str
    ) -> httpx.Response:
        """Starts a streamed response; a non-2xx answer raises (and closes it)."""
        request = self._client.build_request(
            method,
            self.url(path),
            content=json.dumps(json_body, separators=(",", ":")).encode(),
            headers={"Accept": accept, "Content-Type": "application/json"},
        )
        response = await self._client.send(request, auth=self._auth, stream=True)
        if not response.is_success:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise self._error(response)
        return response


async def lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """The non-blank lines of a streamed body, without their line ends."""
    pending = bytearray()
    async for chunk in response.aiter_bytes():
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pending += chunk[start:end]
            if pending.strip():
                yield bytes(pending)
            pending.clear()
            start = end + 1
        pending += chunk[start:]
    if pending.strip():
        yield bytes(pending)
