"""pytest fixtures for the real Docker engine, test images and services (mosquitto, PostgreSQL,
Redis, slapd, Dex).

Registered through ``pytest_plugins`` in tests/conftest.py. Every component is started by the
fixture, from a temporary directory under /tmp, on a free loopback port or a private socket. A
component that cannot start raises :class:`~casemate.testenv.services.ComponentError` with its
log tail: the tests using it error out, they are never skipped.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from casemate.testenv.docker import DockerEngine
from casemate.testenv.images import ensure_busybox_image, ensure_debian12_image
from casemate.testenv.services import (
    MosquittoBroker,
    PostgresServer,
    RedisServer,
    Server,
    free_port,
)
from casemate.testenv.sso import DexServer, SlapdServer

S = TypeVar("S", bound=Server)


def _temporary_dir(prefix: str) -> Path:
    """A fresh directory under /tmp: short (unix socket paths) and searchable by the service
    accounts (pytest's own temporary directories are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    return directory


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (with its own containerd) for the whole session."""
    directory = _temporary_dir("cmd-")
    engine = DockerEngine(directory)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(directory)


@pytest.fixture(scope="session")
def busybox_image(docker_engine: DockerEngine) -> str:
    return ensure_busybox_image(docker_engine)


@pytest.fixture(scope="session")
def debian12_image(docker_engine: DockerEngine) -> str:
    return ensure_debian12_image(docker_engine)


@pytest.fixture(scope="session")
def _services_dir() -> Iterator[Path]:
    directory = _temporary_dir("cms-")
    yield directory
    shutil.rmtree(directory)


def _serve(server: S) -> Iterator[S]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto_broker(_services_dir: Path) -> Iterator[MosquittoBroker]:
    """An anonymous MQTT broker on ``mosquitto_broker.host``/``.port``."""
    yield from _serve(MosquittoBroker(_services_dir / "mosquitto"))


@pytest.fixture(scope="session")
def postgres_server(_services_dir: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server; ``.url`` is a SQLAlchemy URL of its ``casemate`` database."""
    yield from _serve(PostgresServer(_services_dir / "postgres"))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def redis_server(_services_dir: Path) -> Iterator[RedisServer]:
    """A Redis server without persistence; ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    yield from _serve(RedisServer(_services_dir / "redis"))


@pytest.fixture(scope="session")
def slapd_server(_services_dir: Path) -> Iterator[SlapdServer]:
    """OpenLDAP's slapd with a small directory (casemate.testenv.sso): ``.starttls_url``,
    ``.ldaps_url`` and ``.ca_file``."""
    yield from _serve(SlapdServer(_services_dir / "slapd"))


@pytest.fixture(scope="session")
def sso_gateway_port() -> int:
    """The loopback port the single sign-on tests serve Casemate on: Dex's static client
    needs its redirect URI before Dex starts."""
    return free_port()


@pytest.fixture(scope="session")
def dex_server(
    _services_dir: Path, sso_gateway_port: int, slapd_server: SlapdServer
) -> Iterator[DexServer]:
    """Dex (built by scripts/build-testenv dex): ``.issuer``, ``.ca_file``, one static client
    redirecting to ``http://127.0.0.1:{sso_gateway_port}/api/v1/auth/oidc/callback``, one
    static password user, and an LDAP connector to ``slapd_server``."""
    redirect = f"http://127.0.0.1:{sso_gateway_port}/api/v1/auth/oidc/callback"
    yield from _serve(DexServer(_services_dir / "dex", (redirect,), slapd_server))
