"""Every call of the client against a real `silo serve` (see conftest.py)."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from silo_client import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NewSession,
    NotFound,
    Silo,
    SiloError,
    SiloSession,
    Unauthorized,
)

from .conftest import CLIENT_TIMEOUT, MAX_UPLOAD_BYTES, ORDERS, USERS, World

pytestmark = pytest.mark.anyio

COLUMNS = ["id", "tenant", "amount", "note"]


def expected_rows(org: str, tenant: str) -> list[list[object]]:
    # An upload types `amount` (10.50, 20.00, ...) as a float.
    return [
        [id, t, float(amount), note] for (id, t, amount, note) in ORDERS[org] if t == tenant
    ]


async def session_for(world: World, org: str, user: str, **kw: object) -> NewSession:
    async with world.client(org) as silo:
        return await silo.sessions.create(user, **kw)


# --- embed users -------------------------------------------------------------


async def test_embed_users_upsert_get_list_delete(world: World) -> None:
    a = world.orgs["a"]
    async with world.client("a") as silo:
        user = await silo.embed_users.upsert(
            "carol@example.com",
            attributes={"tenant": "acme", "region": "eu", "level": 3},
            groups=["tenants"],
        )
        assert user["external_id"] == "carol@example.com"
        assert user["id"].startswith("eu_")
        assert user["attributes"] == {"tenant": "acme", "region": "eu", "level": 3}
        assert user["groups"] == [a.group_id]
        assert user["org_id"] == (await silo.datasets.list())[0]["org_id"]

        # By external id and by record id; an id with a slash is one segment.
        assert await silo.embed_users.get("carol@example.com") == user
        assert await silo.embed_users.get(user["id"]) == user
        assert "carol@example.com" in {u["external_id"] for u in await silo.embed_users.list()}

        # Upsert replaces attributes and groups whole, and keeps the record.
        again = await silo.embed_users.upsert("carol@example.com", attributes={"tenant": "x"})
        assert again["id"] == user["id"]
        assert again["attributes"] == {"tenant": "x"}
        assert again["groups"] == []

        await silo.embed_users.delete("carol@example.com")
        with pytest.raises(NotFound) as e:
            await silo.embed_users.get("carol@example.com")
        assert e.value.status == 404 and e.value.code == "not_found"

        odd = await silo.embed_users.upsert("team/42?x=1#y", attributes={"tenant": "acme"})
        assert (await silo.embed_users.get("team/42?x=1#y"))["id"] == odd["id"]
        await silo.embed_users.delete("team/42?x=1#y")


# --- sessions ------------------------------------------------------------------


async def test_session_create_renew_revoke(world: World) -> None:
    async with world.client("a") as silo:
        before = datetime.now(timezone.utc)
        new = await silo.sessions.create("alice", ttl_seconds=600)
        assert new.id.startswith("ses_")
        assert new.token and new.generation == 0
        assert new.expires_at.tzinfo is not None
        assert (
            before + timedelta(seconds=595)
            <= new.expires_at
            <= datetime.now(timezone.utc) + timedelta(seconds=601)
        )
        assert new.session["embed_user_id"] == world.orgs["a"].users["alice"]

        first = silo.as_session(new)
        assert [d["id"] for d in await first.datasets()] == [world.orgs["a"].dataset_id]

        # Renewal: same session, new generation and token; the old token is
        # refused from the next request on.
        renewed = await silo.sessions.renew(new.id, "alice", ttl_seconds=1200)
        assert renewed.id == new.id
        assert renewed.generation == 1
        assert renewed.token != new.token
        assert renewed.expires_at > new.expires_at
        with pytest.raises(Unauthorized) as e:
            await first.datasets()
        assert e.value.status == 401
        second = silo.as_session(renewed.token)
        assert len(await second.datasets()) == 1

        # A renewal keeps what it leaves out: a narrowed session stays narrow.
        dataset = world.orgs["a"].dataset_id
        narrow = await silo.sessions.create("alice", datasets=[dataset], parameters={"p": "x"})
        kept = await silo.sessions.renew(narrow.id, "alice")
        assert kept.session["datasets"] == [dataset]
        assert kept.session["parameters"] == {"p": "x"}

        listed = {s["id"]: s for s in await silo.sessions.list()}
        assert listed[new.id]["generation"] == 1
        assert listed[new.id]["revoked_at"] is None

        # Only the same user's session renews.
        with pytest.raises(Conflict):
            await silo.sessions.renew(new.id, "gus")

        await silo.sessions.revoke(new.id)
        with pytest.raises(Unauthorized):
            await second.datasets()
        with pytest.raises(Unauthorized):
            await second.fetch(world.orgs["a"].dataset_id)
        listed = {s["id"]: s for s in await silo.sessions.list()}
        assert listed[new.id]["revoked_at"] is not None
        # A revoked session stays revoked.
        with pytest.raises(Conflict):
            await silo.sessions.renew(new.id, "alice")


async def test_session_narrowed_to_datasets_and_parameters(world: World) -> None:
    a = world.orgs["a"]
    async with world.client("a") as silo:
        other = await silo.datasets.create("uploads", "narrowing")
        try:
            await silo.groups.put(
                "both",
                [
                    {"dataset_id": a.dataset_id, "permission": "read", "all_rows": True},
                    {"dataset_id": other["id"], "permission": "describe", "all_rows": True},
                ],
            )
            await silo.embed_users.upsert("nora", attributes={}, groups=["both"])
            wide = await silo.sessions.create("nora")
            ids = {d["id"]: d["permission"] for d in await silo.as_session(wide).datasets()}
            assert ids == {a.dataset_id: "read", other["id"]: "describe"}
            narrow = await silo.sessions.create(
                "nora", datasets=[a.dataset_id], parameters={"team": "red"}
            )
            assert narrow.session["datasets"] == [a.dataset_id]
            assert narrow.session["parameters"] == {"team": "red"}
            assert [d["id"] for d in await silo.as_session(narrow).datasets()] == [a.dataset_id]
            # A parameter may not shadow an attribute.
            await silo.embed_users.upsert("nora", attributes={"team": "x"}, groups=["both"])
            with pytest.raises(InvalidRequest):
                await silo.sessions.create("nora", parameters={"team": "red"})
        finally:
            with contextlib.suppress(NotFound):
                await silo.embed_users.delete("nora")
            with contextlib.suppress(NotFound):
                await silo.groups.delete("both")
            await silo.datasets.delete(other["id"])


# --- datasets, datasources, groups ---------------------------------------------------


async def test_backend_lists(world: World) -> None:
    a = world.orgs["a"]
    async with world.client("a") as silo:
        datasets = await silo.datasets.list()
        orders = next(d for d in datasets if d["id"] == a.dataset_id)
        assert orders["name"] == "orders"
        assert orders["datasource_id"] == a.datasource_id
        sources = await silo.datasources.list()
        assert [s["name"] for s in sources] == ["uploads"]
        assert (await silo.datasources.get("uploads"))["id"] == a.datasource_id
        assert (await silo.datasources.get(a.datasource_id))["has_credential"] is False
        group = await silo.groups.get("tenants")
        assert group["id"] == a.group_id
        assert group["grants"][0]["row_filter"] == ["tenant = {{user.tenant}}"]
        assert [g["name"] for g in await silo.groups.list()].count("tenants") == 1


async def test_datasource_refused_and_deleted(world: World) -> None:
    async with world.client("a") as silo:
        # A files datasource takes no settings.
        with pytest.raises(InvalidRequest) as e:
            await silo.datasources.create("bad", "files", settings={"data_dir": "/"})
        assert "settings" in e.value.message
        made = await silo.datasources.create("scratch", "files")
        with pytest.raises(Conflict):
            await silo.datasources.create("scratch", "files")
        await silo.datasources.delete(made["id"])
        with pytest.raises(NotFound):
            await silo.datasources.get("scratch")


async def test_embed_dataset_list_and_describe(world: World) -> None:
    a = world.orgs["a"]
    new = await session_for(world, "a", "alice")
    async with world.session(new.token, timeout=CLIENT_TIMEOUT) as s:
        assert await s.datasets() == [
            {"id": a.dataset_id, "name": "orders", "permission": "read"}
        ]
        columns = await s.describe(a.dataset_id)
        assert [c["name"] for c in columns] == COLUMNS
        kinds = {c["name"]: c["kind"] for c in columns}
        assert kinds["id"] == "int" and kinds["tenant"] == "text"


# --- fetch ----------------------------------------------------------------------


@pytest.mark.parametrize("org", ["a", "b"])
async def test_fetch_json_sees_only_its_tenant(world: World, org: str) -> None:
    dataset = world.orgs[org].dataset_id
    for user, tenant in USERS.items():
        new = await session_for(world, org, user)
        async with world.session(new.token, timeout=CLIENT_TIMEOUT) as s:
            got = await s.fetch(dataset)
        assert got["columns"] == COLUMNS
        assert got["rows"] == expected_rows(org, tenant), (org, user)


@pytest.mark.parametrize("org", ["a", "b"])
async def test_stream_ndjson_sees_only_its_tenant(world: World, org: str) -> None:
    dataset = world.orgs[org].dataset_id
    for user, tenant in USERS.items():
        new = await session_for(world, org, user)
        async with world.silo(world.orgs[org].key) as silo:
            s = silo.as_session(new)
            rows = [row async for row in s.stream(dataset)]
        assert rows == [dict(zip(COLUMNS, r)) for r in expected_rows(org, tenant)], (org, user)
        assert all(list(r) == COLUMNS for r in rows)  # keys in column order


async def test_fetch_and_stream_columns_and_limit(world: World) -> None:
    dataset = world.orgs["a"].dataset_id
    new = await session_for(world, "a", "gus")
    async with world.session(new.token, timeout=CLIENT_TIMEOUT) as s:
        got = await s.fetch(dataset, columns=["note", "id"], limit=2)
        assert got == {"columns": ["note", "id"], "rows": [["third", 3], ["fourth", 4]]}
        rows = [r async for r in s.stream(dataset, columns=["id"], limit=1)]
        assert rows == [{"id": 3}]
        # Leaving a stream early releases it; the session goes on working.
        async with s.stream(dataset) as stream:
            async for row in stream:
                assert row["tenant"] == "globex"
                break
        assert len((await s.fetch(dataset))["rows"]) == 3
        # A column it may not see is not there, like one that does not exist.
        with pytest.raises(NotFound):
            await s.fetch(dataset, columns=["no_such_column"])


async def test_stream_error_before_first_row(world: World) -> None:
    new = await session_for(world, "a", "alice")
    async with world.session(new.token, timeout=CLIENT_TIMEOUT) as s:
        with pytest.raises(NotFound) as e:
            async for _ in s.stream("dset_does_not_exist"):
                pass
        assert e.value.status == 404 and not e.value.streamed


# --- metadata and summary ------------------------------------------------------


async def test_metadata_and_summary(world: World) -> None:
    a = world.orgs["a"]
    new = await session_for(world, "a", "gus")
    async with world.session(new.token, timeout=CLIENT_TIMEOUT) as s:
        meta = await s.metadata(a.dataset_id)
        assert meta["schema"] == "silo.metadata.v1"
        assert meta["dataset"] == "orders"
        assert meta["rows"] == 3
        assert [c["name"] for c in meta["columns"]] == COLUMNS
        # Never a row: no tenant value, no note, in the document.
        text = json.dumps(meta)
        assert "globex" not in text and "third" not in text
        summary = await s.summary(a.dataset_id)
        assert summary["source"] == "builtin"
        assert isinstance(summary["summary"], str) and summary["summary"]

    # The privacy policy decides what the document holds.
    async with world.client("a") as silo:
        try:
            d = await silo.datasets.set_privacy(a.dataset_id, {"columns": {"note": "hidden"}})
            assert d["privacy"]["columns"] == {"note": "hidden"}
            async with world.session(new.token) as s:
                meta = await s.metadata(a.dataset_id)
            assert [c["name"] for c in meta["columns"]] == ["id", "tenant", "amount"]
            assert meta["hidden_columns"] == 1
        finally:
            assert (await silo.datasets.set_privacy(a.dataset_id, None))["privacy"] is None


# --- uploads ----------------------------------------------------------------------


def test_setup_upload_reported_progress(world: World) -> None:
    for name, org in world.orgs.items():
        size = len(orders_csv_bytes(name))
        assert org.progress[0] == (0, size)
        assert org.progress[-1] == (size, size)
        assert org.upload["rows"] == len(ORDERS[name])
        assert org.upload["partitions"] == ["acme", "globex"]
        assert [c["name"] for c in org.upload["columns"]] == COLUMNS


def orders_csv_bytes(name: str) -> bytes:
    from .conftest import orders_csv

    return orders_csv(name)


def events_csv(n: int) -> bytes:
    lines = ["seq,tenant,payload"]
    for i in range(n):
        lines.append(f"{i},{'acme' if i % 3 else 'globex'},{'x' * 40}-{i}")
    return ("\n".join(lines) + "\n").encode()


async def test_upload_progress_path_file_and_bytes(world: World, tmp_path) -> None:
    data = events_csv(20_000)  # about a megabyte: many chunks
    async with world.client("a") as silo:
        events = await silo.datasets.create("uploads", "events")
        try:
            seen: list[tuple[int, int | None]] = []

            async def progress(sent: int, total: int | None) -> None:
                seen.append((sent, total))

            summary = await silo.datasets.upload(
                events["id"], data, on_progress=progress, chunk_size=64 * 1024
            )
            assert summary["rows"] == 20_000
            assert summary["partitions"] == ["_all"]  # not split
            sent = [s for s, _ in seen]
            assert all(t == len(data) for _, t in seen)
            assert sent == sorted(sent) and sent[0] == 0 and sent[-1] == len(data)
            assert len(seen) == 1 + -(-len(data) // (64 * 1024))

            # From a path (the format from its suffix), split by tenant.
            path = tmp_path / "events.csv"
            path.write_bytes(data)
            seen.clear()
            summary = await silo.datasets.upload(
                events["id"], str(path), on_progress=progress, partition_by="tenant"
            )
            assert summary["partitions"] == ["acme", "globex"]
            assert seen[-1] == (len(data), len(data))

            # From a binary file, as NDJSON.
            ndjson = b"".join(
                json.dumps({"seq": i, "tenant": "acme"}).encode() + b"\n" for i in range(10)
            )
            summary = await silo.datasets.upload(events["id"], io.BytesIO(ndjson), "ndjson")
            assert summary["rows"] == 10
            assert [c["name"] for c in summary["columns"]] == ["seq", "tenant"]

            # A bad file is refused with its line; the data stays.
            with pytest.raises(InvalidRequest) as e:
                await silo.datasets.upload(events["id"], b"seq,tenant\n1,acme\n2\n", "csv")
            assert "line 3" in e.value.message
            await silo.groups.put(
                "events", [{"dataset_id": events["id"], "permission": "read", "all_rows": True}]
            )
            await silo.embed_users.upsert("ev", groups=["events"])
            new = await silo.sessions.create("ev")
            got = await silo.as_session(new).fetch(events["id"], columns=["seq"])
            assert [r[0] for r in got["rows"]] == list(range(10))
        finally:
            with contextlib.suppress(NotFound):
                await silo.embed_users.delete("ev")
            with contextlib.suppress(NotFound):
                await silo.groups.delete("events")
            await silo.datasets.delete(events["id"])


async def test_upload_too_large_is_limit_exceeded(world: World) -> None:
    data = events_csv(MAX_UPLOAD_BYTES // 40)
    assert len(data) > MAX_UPLOAD_BYTES
    async with world.client("a") as silo:
        big = await silo.datasets.create("uploads", "big")
        try:
            # The server answers 413 as soon as the limit is passed and closes
            # the connection with the rest of the body unread: the reset
            # usually loses the answer before httpx (which reads only once the
            # body is sent) gets to it.
            with pytest.raises((LimitExceeded, httpx.TransportError)) as e:
                await silo.datasets.upload(big["id"], data, "csv")
            if isinstance(e.value, SiloError):
                assert e.value.status == 413
            else:
                assert "refused" in "".join(getattr(e.value, "__notes__", []))
            # Nothing was stored, and the server goes on serving.
            assert [d["id"] for d in await silo.datasets.list()].count(big["id"]) == 1
            small = await silo.datasets.upload(big["id"], data[:1000].rsplit(b"\n", 1)[0], "csv")
            assert small["rows"] > 0
        finally:
            await silo.datasets.delete(big["id"])


async def test_upload_needs_a_known_format(world: World) -> None:
    async with world.client("a") as silo:
        with pytest.raises(ValueError):
            await silo.datasets.upload(world.orgs["a"].dataset_id, io.BytesIO(b"id\n1\n"))
        with pytest.raises(FileNotFoundError):
            await silo.datasets.upload(world.orgs["a"].dataset_id, "/no/such/file.csv")


# --- errors --------------------------------------------------------------------------


async def test_another_orgs_ids_are_not_found(world: World) -> None:
    a, b = world.orgs["a"], world.orgs["b"]
    a_session = await session_for(world, "a", "alice")
    b_session = await session_for(world, "b", "alice")
    async with world.client("b") as silo:
        with pytest.raises(NotFound):
            await silo.embed_users.get(a.users["alice"])
        with pytest.raises(NotFound):
            await silo.embed_users.delete(a.users["gus"])
        with pytest.raises(NotFound):
            await silo.sessions.revoke(a_session.id)
        with pytest.raises(NotFound):
            await silo.sessions.renew(a_session.id, "alice")
        with pytest.raises(NotFound):
            await silo.sessions.create("alice", datasets=[a.dataset_id])
        with pytest.raises(NotFound):
            await silo.datasets.upload(a.dataset_id, b"id,tenant\n1,acme\n", "csv")
        with pytest.raises(NotFound):
            await silo.datasources.get(a.datasource_id)
        with pytest.raises(NotFound):
            await silo.groups.get(a.group_id)
        with pytest.raises(NotFound):
            await silo.datasets.delete(a.dataset_id)
        # A session of org B cannot reach org A's dataset either.
        b_embed = silo.as_session(b_session)
        with pytest.raises(NotFound):
            await b_embed.fetch(a.dataset_id)
        with pytest.raises(NotFound):
            await b_embed.describe(a.dataset_id)
        with pytest.raises(NotFound):
            await b_embed.metadata(a.dataset_id)
    # Org A's things are all still there and working.
    async with world.client("a") as silo:
        assert (await silo.embed_users.get("gus"))["id"] == a.users["gus"]
        got = await silo.as_session(a_session).fetch(a.dataset_id)
        assert got["rows"] == expected_rows("a", "acme")


async def test_bad_requests(world: World) -> None:
    async with world.client("a") as silo:
        with pytest.raises(InvalidRequest) as e:
            await silo.sessions.create("alice", ttl_seconds=0)
        assert (e.value.status, e.value.code) == (400, "invalid_request")
        assert "ttl_seconds" in e.value.message
        with pytest.raises(InvalidRequest):
            await silo.embed_users.upsert("eu_looks_like_a_record_id")
        with pytest.raises(InvalidRequest):
            await silo.groups.put(
                "broken",
                [{"dataset_id": world.orgs["a"].dataset_id, "permission": "read",
                  "row_filter": ["tenant = = {{user.tenant}}"]}],
            )
        with pytest.raises(NotFound):
            await silo.sessions.create("nobody-by-this-name")
        # A user without the attribute its filter reads gets no rows: refused.
        await silo.embed_users.upsert("no-tenant", groups=["tenants"])
        try:
            new = await silo.sessions.create("no-tenant")
            with pytest.raises(Forbidden) as e:
                await silo.as_session(new).fetch(world.orgs["a"].dataset_id)
            assert "tenant" in e.value.message and e.value.status == 403
        finally:
            await silo.embed_users.delete("no-tenant")
        # An org key is not an operator key.
        with pytest.raises(Unauthorized):
            await silo.orgs.create("org-c")


async def test_wrong_credentials_are_unauthorized(world: World) -> None:
    async with world.silo("silo_key_nope.nope") as silo:
        with pytest.raises(Unauthorized):
            await silo.datasets.list()
    # A session token is not an API key, nor an API key a session token.
    new = await session_for(world, "a", "alice")
    async with world.silo(new.token) as silo:
        with pytest.raises(Unauthorized):
            await silo.datasets.list()
    async with world.session(world.orgs["a"].key) as s:
        with pytest.raises(Unauthorized):
            await s.datasets()


async def test_secrets_never_in_repr_or_str(world: World) -> None:
    key = world.orgs["a"].key
    async with world.silo(key) as silo:
        new = await silo.sessions.create("alice")
        embed = silo.as_session(new)
        for obj in (silo, embed, new, silo._t, silo._t.secret):
            for text in (repr(obj), str(obj)):
                assert key not in text and new.token not in text, text
        assert "***" in repr(silo) and world.base_url in repr(silo)
        with pytest.raises(TypeError):
            pickle.dumps(silo)

    async with world.silo(world.server.admin_key) as op:
        minted = await op.orgs.create_api_key("org-a", "second")
        assert world.server.admin_key not in repr(op)
    assert minted.token not in repr(minted) and minted.token not in str(minted)

    errors: list[SiloError] = []
    bogus = "silo_key_bogus.s3cr3t-value-that-must-not-leak"
    async with world.silo(bogus) as silo:
        try:
            await silo.datasets.list()
        except SiloError as e:
            errors.append(e)
    async with world.session(new.token) as s:
        try:
            await s.fetch("dset_missing")
        except SiloError as e:
            errors.append(e)
    assert [type(e) for e in errors] == [Unauthorized, NotFound]
    for e in errors:
        for text in (repr(e), str(e), repr(e.args), repr(pickle.loads(pickle.dumps(e)))):
            assert bogus not in text and new.token not in text and key not in text


async def test_server_error_messages_are_scrubbed_of_the_credential() -> None:
    secret = "silo_key_abc.def-very-secret"

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"]
        return httpx.Response(
            403, json={"error": {"code": "forbidden", "message": f"refused {sent}"}}
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(echo))
    async with client, Silo("http://silo.invalid", secret, http_client=client) as silo:
        with pytest.raises(SiloError) as e:
            await silo.datasets.list()
    assert secret not in str(e.value) and secret not in repr(e.value)
    assert e.value.message == "refused Bearer ***"
