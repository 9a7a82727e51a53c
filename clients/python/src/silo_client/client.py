"""The backend client: what a customer's backend calls with its
organization's API key."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

import httpx

from . import models
from ._http import Secret, Transport, segment
from ._upload import DEFAULT_CHUNK, ProgressCallback, UploadSource, prepare
from .session import SiloSession

__all__ = [
    "Silo",
    "NewSession",
    "NewKey",
    "EmbedUsers",
    "Sessions",
    "Datasets",
    "Datasources",
    "Groups",
    "Orgs",
]


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _drop_none(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


@dataclass(frozen=True, repr=False)
class NewSession:
    """A minted (or renewed) session and its token, shown once.

    ``token`` goes to the embed user's browser (``Authorization: Bearer``);
    it never appears in ``repr``/``str``.
    """

    id: str
    token: str = field(repr=False)
    expires_at: datetime
    session: models.Session

    @property
    def generation(self) -> int:
        """Renewals so far: a token of an older generation is refused."""
        return self.session["generation"]

    def __repr__(self) -> str:
        return (
            f"NewSession(id={self.id!r}, expires_at={self.expires_at.isoformat()!r}, "
            f"generation={self.generation}, token='***')"
        )

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class NewKey:
    """A minted API key: its token is shown once and never in ``repr``/``str``."""

    key: models.ApiKeyInfo
    token: str = field(repr=False)

    def __repr__(self) -> str:
        return f"NewKey(id={self.key['id']!r}, name={self.key['name']!r}, token='***')"

    __str__ = __repr__


class _Resource:
    def __init__(self, transport: Transport) -> None:
        self._t = transport


class EmbedUsers(_Resource):
    """``/v1/embed-users``: the customer's end users, by the customer's own id."""

    async def upsert(
        self,
        id: str,
        attributes: Mapping[str, Any] | None = None,
        groups: Sequence[str] | None = None,
    ) -> models.EmbedUser:
        """Creates or replaces the user ``id``: its attributes (what row filters
        read as ``{{user.<name>}}``) and its groups (names or ids), both replaced whole."""
        body = {"attributes": dict(attributes or {}), "groups": list(groups or [])}
        return cast(
            models.EmbedUser,
            await self._t.call("PUT", f"/v1/embed-users/{segment(id)}", json_body=body),
        )

    async def get(self, id: str) -> models.EmbedUser:
        """The user, by external id or record id (``eu_…``)."""
        return cast(models.EmbedUser, await self._t.call("GET", f"/v1/embed-users/{segment(id)}"))

    async def list(self) -> list[models.EmbedUser]:
        return cast("list[models.EmbedUser]", await self._t.call("GET", "/v1/embed-users"))

    async def delete(self, id: str) -> None:
        """Deletes the user and its sessions."""
        await self._t.call("DELETE", f"/v1/embed-users/{segment(id)}")


class Sessions(_Resource):
    """``/v1/sessions``: short-lived, revocable grants to one embed user."""

    async def _put(self, body: dict[str, Any]) -> NewSession:
        out = cast(
            models.SessionToken, await self._t.call("POST", "/v1/sessions", json_body=body)
        )
        session = out["session"]
        return NewSession(
            id=session["id"],
            token=out["token"],
            expires_at=_utc(session["expires_at"]),
            session=session,
        )

    @staticmethod
    def _body(
        embed_user: str,
        ttl_seconds: int | None,
        datasets: Iterable[str] | None,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        return _drop_none(
            {
                "embed_user": embed_user,
                "ttl_seconds": ttl_seconds,
                "datasets": None if datasets is None else list(datasets),
                "parameters": None if parameters is None else dict(parameters),
            }
        )

    async def create(
        self,
        embed_user: str,
        ttl_seconds: int | None = None,
        datasets: Iterable[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> NewSession:
        """Mints a session for ``embed_user`` (external id).

        ``ttl_seconds``: 1 to 86400 (server default 900). ``datasets``: dataset
        ids it may use (default: all the user's groups grant). ``parameters``:
        extra ``{{user.<name>}}`` values, which may not shadow an attribute.
        """
        return await self._put(self._body(embed_user, ttl_seconds, datasets, parameters))

    async def renew(
        self,
        id: str,
        embed_user: str,
        ttl_seconds: int | None = None,
        datasets: Iterable[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> NewSession:
        """Renews session ``id`` (of the same ``embed_user``): a new token and
        expiry; every token of the old generation stops working.

        ``datasets`` and ``parameters`` replace the session's only when given;
        left out, the server keeps them, so a renewal never widens a session.
        The lifetime restarts (``ttl_seconds``, default 900).
        """
        body = self._body(embed_user, ttl_seconds, datasets, parameters)
        body["id"] = id
        return await self._put(body)

    async def revoke(self, id: str) -> None:
        """Revokes the session: its tokens fail from the next request."""
        await self._t.call("DELETE", f"/v1/sessions/{segment(id)}")

    async def list(self) -> list[models.Session]:
        return cast("list[models.Session]", await self._t.call("GET", "/v1/sessions"))


class Datasets(_Resource):
    """``/v1/datasets``: governed tables, collections and uploads."""

    async def list(self) -> list[models.Dataset]:
        return cast("list[models.Dataset]", await self._t.call("GET", "/v1/datasets"))

    async def create(self, datasource: str, name: str) -> models.Dataset:
        """Adds dataset ``name`` (a table, collection or upload name) to a
        datasource (id or name)."""
        body = {"datasource": datasource, "name": name}
        return cast(models.Dataset, await self._t.call("POST", "/v1/datasets", json_body=body))

    async def delete(self, id: str) -> None:
        """Deletes the dataset and its grants."""
        await self._t.call("DELETE", f"/v1/datasets/{segment(id)}")

    async def set_privacy(
        self, id: str, policy: models.PrivacyPolicy | Mapping[str, Any] | None
    ) -> models.Dataset:
        """Sets what of the dataset's metadata may reach an LLM (``None``: the default)."""
        body = json.dumps(None if policy is None else dict(policy)).encode()
        response = await self._t.send(
            "PUT",
            f"/v1/datasets/{segment(id)}/privacy",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        return cast(models.Dataset, response.json())

    async def upload(
        self,
        id: str,
        source: UploadSource,
        content_type: str | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        partition_by: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> models.UploadSummary:
        """Replaces the data of an upload dataset (of a ``files`` datasource).

        ``source``: ``bytes``, a path (``str`` or ``PathLike``: a ``str`` is
        always a path), a binary file, or an async iterable of ``bytes``.
        ``content_type``: ``text/csv`` or ``application/x-ndjson`` (also
        ``"csv"``/``"ndjson"``); by default from the file name, or for bytes
        from the content (a leading ``{`` is NDJSON).
        ``on_progress(sent, total)`` (may be async) is called with 0 first and
        after each chunk the connection takes; ``total`` is ``None`` when the
        size is unknown. ``partition_by``: split into one directory per value
        of this column (e.g. the tenant), so a fetch opens only its own.

        The file is validated whole; a bad one raises :class:`InvalidRequest`
        naming its line, and the previous data stays.
        """
        body = prepare(source, content_type, chunk_size)
        # Not reused after: a refusal comes before the server has read the
        # body, and it leaves the connection to close under the next request.
        headers = {"Content-Type": body.content_type, "Connection": "close"}
        if body.total is not None:
            headers["Content-Length"] = str(body.total)
        params = {"partition_by": partition_by} if partition_by else None
        try:
            response = await self._t.send(
                "POST",
                f"/v1/datasets/{segment(id)}/upload",
                content=body.stream(on_progress),
                headers=headers,
                params=params,
            )
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as e:
            # The server answers a refusal (413 over its upload limit, 401,
            # 404) before it has read the body, then closes; the reset often
            # loses the answer.
            e.add_note(
                "silo-client: the connection closed while the upload was being sent; the "
                "server may have refused it (too large for its --max-upload-bytes, an unknown "
                "dataset, a bad key) and the reset lost its answer"
            )
            raise
        return cast(models.UploadSummary, response.json())


class Datasources(_Resource):
    """``/v1/datasources``: databases, APIs and upload areas, with their credentials."""

    async def create(
        self,
        name: str,
        kind: models.DatasourceKind | str,
        *,
        settings: Mapping[str, Any] | None = None,
        password: str | None = None,
        accept_write_privileges: bool = False,
        connector: str | None = None,
    ) -> models.Datasource:
        """Registers a datasource. Silo connects with the credential first and
        refuses one that can write (:class:`Forbidden`). A ``files`` datasource
        takes no settings: it reads this organization's uploads."""
        body = _drop_none(
            {
                "name": name,
                "kind": kind,
                "settings": dict(settings or {}),
                "password": password,
                "accept_write_privileges": accept_write_privileges or None,
                "connector": connector,
            }
        )
        return cast(
            models.Datasource, await self._t.call("POST", "/v1/datasources", json_body=body)
        )

    async def list(self) -> list[models.Datasource]:
        return cast("list[models.Datasource]", await self._t.call("GET", "/v1/datasources"))

    async def get(self, id: str) -> models.Datasource:
        """A datasource by id or name (never its credential)."""
        return cast(
            models.Datasource, await self._t.call("GET", f"/v1/datasources/{segment(id)}")
        )

    async def delete(self, id: str) -> None:
        """Deletes the datasource, its datasets and their grants."""
        await self._t.call("DELETE", f"/v1/datasources/{segment(id)}")


class Groups(_Resource):
    """``/v1/groups``: grants of datasets, with row filters and columns."""

    async def put(
        self, name: str, grants: Iterable[models.GroupGrant | Mapping[str, Any]]
    ) -> models.Group:
        """Creates or replaces group ``name`` with ``grants``, e.g.
        ``{"dataset_id": "dset_…", "permission": "read",
        "row_filter": ["tenant = {{user.tenant}}"], "columns": ["id", "amount"]}``.
        A member of several groups sees the union of their rows."""
        body = {"grants": [dict(g) for g in grants]}
        return cast(
            models.Group, await self._t.call("PUT", f"/v1/groups/{segment(name)}", json_body=body)
        )

    async def get(self, name: str) -> models.Group:
        return cast(models.Group, await self._t.call("GET", f"/v1/groups/{segment(name)}"))

    async def list(self) -> list[models.Group]:
        return cast("list[models.Group]", await self._t.call("GET", "/v1/groups"))

    async def delete(self, name: str) -> None:
        await self._t.call("DELETE", f"/v1/groups/{segment(name)}")


class Orgs(_Resource):
    """``/v1/orgs``: organizations and their keys (an operator key only)."""

    async def create(self, name: str) -> models.Organization:
        return cast(
            models.Organization,
            await self._t.call("POST", "/v1/orgs", json_body={"name": name}),
        )

    async def list(self) -> list[models.Organization]:
        return cast("list[models.Organization]", await self._t.call("GET", "/v1/orgs"))

    async def create_api_key(self, org: str, name: str) -> NewKey:
        """Mints an API key for ``org`` (id or name); its token is shown once."""
        out = cast(
            models.NewKey,
            await self._t.call(
                "POST", f"/v1/orgs/{segment(org)}/api-keys", json_body={"name": name}
            ),
        )
        return NewKey(key=out["key"], token=out["token"])


class Silo:
    """A customer's backend's client, with its organization's API key
    (or an operator key, for :attr:`orgs`).

    Use as ``async with Silo(url, key) as silo: ...`` (or call :meth:`aclose`).
    Every non-2xx answer raises a :class:`~silo_client.SiloError` subclass.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout | float | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._t = Transport(
            base_url, Secret(api_key), client=http_client, timeout=timeout, transport=transport
        )
        self.embed_users = EmbedUsers(self._t)
        self.sessions = Sessions(self._t)
        self.datasets = Datasets(self._t)
        self.datasources = Datasources(self._t)
        self.groups = Groups(self._t)
        self.orgs = Orgs(self._t)

    @property
    def base_url(self) -> str:
        return self._t.base_url

    def as_session(self, token: str | NewSession) -> SiloSession:
        """An embed client for a session token, sharing this client's
        connections (close this one, not it)."""
        if isinstance(token, NewSession):
            token = token.token
        return SiloSession._over(self._t.with_secret(Secret(token)))

    async def aclose(self) -> None:
        await self._t.aclose()

    async def __aenter__(self) -> Silo:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Silo(base_url={self.base_url!r}, api_key='***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Silo client is not picklable")
