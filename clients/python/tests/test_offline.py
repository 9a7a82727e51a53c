"""The client's own logic, against canned answers (no server)."""

from __future__ import annotations

import json
import pickle

import httpx
import pytest

from silo_client import (
    Busy,
    Conflict,
    ConnectorFailed,
    DatasourceFailed,
    Forbidden,
    Internal,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    RequestTimeout,
    SiloError,
    SiloSession,
    Unauthorized,
)
from silo_client import errors

pytestmark = pytest.mark.anyio

TOKEN = "eyJ.session.token-that-must-not-leak"


def session_over(handler) -> tuple[httpx.AsyncClient, SiloSession]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return client, SiloSession("http://silo.test", TOKEN, http_client=client)


def ndjson(*objs: object, tail: bytes = b"\n") -> bytes:
    return b"\n".join(json.dumps(o).encode() for o in objs) + tail


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        ("invalid_request", InvalidRequest, 400),
        ("unauthorized", Unauthorized, 401),
        ("forbidden", Forbidden, 403),
        ("not_found", NotFound, 404),
        ("request_timeout", RequestTimeout, 408),
        ("conflict", Conflict, 409),
        ("limit_exceeded", LimitExceeded, 413),
        ("busy", Busy, 503),
        ("connector_failed", ConnectorFailed, 502),
        ("datasource_failed", DatasourceFailed, 502),
        ("internal", Internal, 500),
        ("something_new", SiloError, 418),
    ],
)
def test_each_code_has_its_class(code: str, cls: type[SiloError], status: int) -> None:
    response = httpx.Response(status, json={"error": {"code": code, "message": "why"}})
    err = errors.from_response(response)
    assert type(err) is cls
    assert (err.status, err.code, err.message, err.retry_after) == (status, code, "why", None)
    assert isinstance(err, SiloError)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and again.message == "why"


def test_retry_after_and_foreign_bodies() -> None:
    busy = errors.from_response(
        httpx.Response(
            503,
            headers={"Retry-After": "1"},
            json={"error": {"code": "busy", "message": "all instances in use"}},
        )
    )
    assert isinstance(busy, Busy) and busy.retry_after == 1.0
    proxy = errors.from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert type(proxy) is SiloError and proxy.code is None and proxy.status == 502
    assert "Bad Gateway" in proxy.message


async def test_stream_rows_then_error_line() -> None:
    rows = [{"id": 1, "tenant": "acme"}, {"id": 2, "tenant": "acme"}]
    body = ndjson(*rows, {"error": {"code": "limit_exceeded", "message": "max_rows reached"}})

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "application/x-ndjson"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert json.loads(request.content) == {"columns": ["id", "tenant"], "limit": 5}
        return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body)

    client, s = session_over(handler)
    got = []
    async with client:
        with pytest.raises(LimitExceeded) as e:
            async for row in s.stream("dset_1", columns=["id", "tenant"], limit=5):
                got.append(row)
    assert got == rows
    assert e.value.streamed and e.value.code == "limit_exceeded"
    assert e.value.message == "max_rows reached" and e.value.status == 422
    assert TOKEN not in str(e.value) and TOKEN not in repr(e.value)


async def test_stream_error_as_first_line_and_unknown_code() -> None:
    body = ndjson({"error": {"code": "brand_new", "message": "later codes"}})

    client, s = session_over(
        lambda r: httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body)
    )
    async with client:
        with pytest.raises(SiloError) as e:
            [r async for r in s.stream("dset_1")]
    assert type(e.value) is SiloError and e.value.code == "brand_new" and e.value.streamed


async def test_stream_a_lone_error_column_that_is_a_row() -> None:
    # A dataset whose only column is `error` holding such objects: a row,
    # because more lines follow it.
    looks_like = {"error": {"code": "conflict", "message": "a value"}}
    body = ndjson(looks_like, {"error": None}, tail=b"")

    client, s = session_over(
        lambda r: httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body)
    )
    async with client:
        got = [r async for r in s.stream("dset_1")]
    assert got == [looks_like, {"error": None}]


async def test_stream_lines_split_across_chunks() -> None:
    rows = [{"id": i, "text": "é" * (i % 7) + "\\n"} for i in range(200)]
    data = ndjson(*rows)

    async def pieces():
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    client, s = session_over(
        lambda r: httpx.Response(
            200, headers={"content-type": "application/x-ndjson"}, content=pieces()
        )
    )
    async with client:
        got = [r async for r in s.stream("dset_1")]
    assert got == rows


async def test_stream_of_a_server_that_answers_json() -> None:
    doc = {"columns": ["id", "n"], "rows": [[1, "a"], [2, "b"]]}
    client, s = session_over(lambda r: httpx.Response(200, json=doc))
    async with client:
        got = [r async for r in s.stream("dset_1")]
    assert got == [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]


async def test_non_2xx_stream_raises_before_rows() -> None:
    client, s = session_over(
        lambda r: httpx.Response(
            401, json={"error": {"code": "unauthorized", "message": "the session token is not valid"}}
        )
    )
    async with client:
        with pytest.raises(Unauthorized) as e:
            [r async for r in s.stream("dset_1")]
    assert e.value.status == 401 and not e.value.streamed


def test_ids_are_one_path_segment() -> None:
    from silo_client._http import segment

    assert segment("team/42?x#y %") == "team%2F42%3Fx%23y%20%25"
    with pytest.raises(ValueError):
        segment("")


async def test_upload_request_shape_and_progress(tmp_path) -> None:
    from silo_client import Silo

    seen: dict[str, object] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = await request.aread()
        seen["headers"] = request.headers
        seen["url"] = str(request.url)
        return httpx.Response(200, json={"rows": 3, "columns": [], "partitions": ["_all"]})

    data = b"id,tenant\n" + b"".join(b"%d,acme\n" % i for i in range(50_000))
    path = tmp_path / "orders.ndjson"
    path.write_bytes(b'{"id": 1}\n')
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    progress: list[tuple[int, int | None]] = []
    async with client, Silo("http://silo.test/", "k3y", http_client=client) as silo:
        out = await silo.datasets.upload(
            "dset/1",
            data,
            on_progress=lambda s, t: progress.append((s, t)),
            partition_by="tenant",
            chunk_size=10_000,
        )
        assert out["rows"] == 3
        headers = seen["headers"]
        assert isinstance(headers, httpx.Headers)
        assert headers["content-type"] == "text/csv"  # told by the content
        assert headers["content-length"] == str(len(data))
        assert headers["connection"] == "close"
        assert seen["url"] == "http://silo.test/v1/datasets/dset%2F1/upload?partition_by=tenant"
        assert seen["body"] == data
        assert progress[0] == (0, len(data)) and progress[-1] == (len(data), len(data))
        assert [s for s, _ in progress] == sorted({s for s, _ in progress})
        assert len(progress) == 1 + -(-len(data) // 10_000)

        # A path's suffix tells the format; an async iterable has no size.
        await silo.datasets.upload("d", path)
        assert seen["headers"]["content-type"] == "application/x-ndjson"  # type: ignore[index]

        async def parts():
            yield b"id\n"
            yield b"1\n"

        progress.clear()
        await silo.datasets.upload("d", parts(), "csv", lambda s, t: progress.append((s, t)))
        assert seen["body"] == b"id\n1\n"
        assert progress == [(0, None), (3, None), (5, None)]


async def test_a_transport_carries_every_request_and_is_closed_with_the_client() -> None:
    from silo_client import Silo

    seen: list[httpx.Request] = []
    closed: list[bool] = []

    class Recording(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    async with Silo("http://silo.invalid", "silo_key_x.y", transport=Recording(answer)) as silo:
        assert await silo.groups.list() == []
        async with silo.as_session(TOKEN) as embed:
            assert await embed.datasets() == []
    assert [r.url.path for r in seen] == ["/v1/groups", "/v1/embed/datasets"]
    assert seen[1].headers["authorization"] == f"Bearer {TOKEN}"
    assert closed == [True]
    with pytest.raises(ValueError, match="not both"):
        SiloSession(
            "http://silo.invalid",
            TOKEN,
            transport=Recording(answer),
            http_client=httpx.AsyncClient(),
        )
