"""A real `silo serve` for the whole test session, in a fresh data
directory, and two organizations set up through the client under test.

The server listens on a Unix socket in that directory and every client
reaches it through an httpx transport over the socket: a local socket that
no network policy of the machine running the tests can redirect, and that
no other process can reach. The clients' base URL names no machine.

The binary is $SILO_BIN, else ${CARGO_TARGET_DIR:-/var/tmp/silo-ci-target}/debug/silo
(falling back to the release build there when no debug build exists)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from silo_client import Silo, SiloSession

STARTUP_SECONDS = 120
# The first request of a datasource may compile its connector.
CLIENT_TIMEOUT = 600.0
#: The base URL clients are given: `.invalid` never resolves, so a request
#: that bypassed the socket would fail instead of reaching anything.
BASE_URL = "http://silo.invalid"


def silo_bin() -> Path:
    if os.environ.get("SILO_BIN"):
        path = Path(os.environ["SILO_BIN"])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/silo-ci-target"))
        path = target / "debug" / "silo"
        if not path.exists() and (target / "release" / "silo").exists():
            path = target / "release" / "silo"
    if not path.exists():
        pytest.exit(
            f"no silo binary at {path}: build it (cargo build -p silo-host) or set SILO_BIN",
            returncode=2,
        )
    return path


@dataclass
class Server:
    socket: Path
    admin_key: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    base_url: str = BASE_URL

    def transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(uds=str(self.socket))

    def silo(self, key: str, **kw: Any) -> Silo:
        """A backend client of this server."""
        return Silo(self.base_url, key, transport=self.transport(), **kw)

    def session(self, token: str, **kw: Any) -> SiloSession:
        """An embed client of this server."""
        return SiloSession(self.base_url, token, transport=self.transport(), **kw)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, however it dies (Linux)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _start(binary: Path, data_dir: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if k != "SILO_MASTER_KEY"}
    created = subprocess.run(
        [str(binary), "api-keys", "create", "--admin", "--data-dir", str(data_dir)],
        capture_output=True,
        env=env,
        timeout=120,
    )
    if created.returncode != 0:
        raise RuntimeError(f"silo api-keys create failed: {created.stderr.decode()}")
    admin_key = created.stdout.decode().strip()
    assert admin_key, "silo api-keys create printed no key"
    log = data_dir.parent / "serve.log"
    socket = data_dir.parent / "api.sock"
    serving = f"silo serving on unix:{socket} "
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(binary), "serve",
                "--data-dir", str(data_dir),
                "--listen", f"unix:{socket}",
                "--drain-timeout", "5",
                "--max-upload-bytes", str(MAX_UPLOAD_BYTES),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if serving in text:
            return Server(socket, admin_key, data_dir, log, process)
        if process.poll() is not None:
            raise RuntimeError(f"silo serve exited ({process.returncode}):\n{text}")
        time.sleep(0.05)
    _stop(process)
    raise RuntimeError(f"silo serve did not start in {STARTUP_SECONDS}s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


#: What `silo serve` is started with: a larger upload is refused (413).
MAX_UPLOAD_BYTES = 4 << 20


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="silo-client-test-"))
    srv = _start(silo_bin(), root / "data")
    try:
        yield srv
    finally:
        _stop(srv.process)
        assert srv.process.returncode is not None
        if os.environ.get("SILO_KEEP_TEST_DIR"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# Two tenants' orders, the same in shape in both organizations; each org's
# rows are told apart by their ids.
HEADER = "id,tenant,amount,note"
ORDERS = {
    "a": [
        (1, "acme", "10.50", "first"),
        (2, "acme", "20.00", "second"),
        (3, "globex", "30.25", "third"),
        (4, "globex", "40.00", "fourth"),
        (5, "globex", "5.75", "fifth"),
    ],
    "b": [
        (101, "acme", "1.00", "b-one"),
        (102, "globex", "2.00", "b-two"),
    ],
}


def orders_csv(org: str) -> bytes:
    lines = [HEADER] + [",".join(map(str, row)) for row in ORDERS[org]]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Org:
    name: str
    key: str
    datasource_id: str
    dataset_id: str
    group_id: str
    users: dict[str, str] = field(default_factory=dict)  # external id -> eu_… record id
    upload: dict = field(default_factory=dict)
    progress: list[tuple[int, int | None]] = field(default_factory=list)


@dataclass
class World:
    server: Server
    orgs: dict[str, Org]

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, org: str) -> Silo:
        return self.silo(self.orgs[org].key, timeout=CLIENT_TIMEOUT)

    def silo(self, key: str, **kw: Any) -> Silo:
        return self.server.silo(key, **kw)

    def session(self, token: str, **kw: Any) -> SiloSession:
        return self.server.session(token, **kw)


#: Embed users in every org: external id -> tenant.
USERS = {"alice": "acme", "gus": "globex"}


async def _set_up(srv: Server) -> World:
    orgs: dict[str, Org] = {}
    async with srv.silo(srv.admin_key, timeout=CLIENT_TIMEOUT) as operator:
        for name in ("a", "b"):
            org = await operator.orgs.create(f"org-{name}")
            assert org["name"] == f"org-{name}"
            key = await operator.orgs.create_api_key(org["name"], "backend")
            async with srv.silo(key.token, timeout=CLIENT_TIMEOUT) as silo:
                source = await silo.datasources.create("uploads", "files")
                assert source["kind"] == "files"
                dataset = await silo.datasets.create("uploads", "orders")
                progress: list[tuple[int, int | None]] = []
                summary = await silo.datasets.upload(
                    dataset["id"],
                    orders_csv(name),
                    "text/csv",
                    lambda sent, total: progress.append((sent, total)),
                    partition_by="tenant",
                )
                group = await silo.groups.put(
                    "tenants",
                    [
                        {
                            "dataset_id": dataset["id"],
                            "permission": "read",
                            "row_filter": ["tenant = {{user.tenant}}"],
                        }
                    ],
                )
                o = Org(
                    name=org["name"],
                    key=key.token,
                    datasource_id=source["id"],
                    dataset_id=dataset["id"],
                    group_id=group["id"],
                    upload=dict(summary),
                    progress=progress,
                )
                for user, tenant in USERS.items():
                    eu = await silo.embed_users.upsert(
                        user, attributes={"tenant": tenant}, groups=["tenants"]
                    )
                    o.users[user] = eu["id"]
                orgs[name] = o
    return World(srv, orgs)


@pytest.fixture(scope="session")
def world(server: Server) -> World:
    return anyio.run(_set_up, server)
