"""The real mosquitto and PostgreSQL servers."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import create_engine, text

from casemate.testenv.services import MosquittoBroker, PostgresServer, tcp_answers


@pytest.mark.mqtt
async def test_mosquitto_delivers_a_message(mosquitto_broker: MosquittoBroker) -> None:
    host, port = mosquitto_broker.host, mosquitto_broker.port
    async with aiomqtt.Client(host, port, identifier="casemate-sub") as subscriber:
        await subscriber.subscribe("casemate/test/#", qos=1)
        async with aiomqtt.Client(host, port, identifier="casemate-pub") as publisher:
            await publisher.publish("casemate/test/hello", b"hi there", qos=1)
        async with asyncio.timeout(10):
            message = await anext(subscriber.messages)
    assert str(message.topic) == "casemate/test/hello"
    assert message.payload == b"hi there"


def _scalar(url: str, query: str) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(query)).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.pg
def test_postgres_answers(postgres_server: PostgresServer) -> None:
    assert postgres_server.url.startswith("postgresql+psycopg://casemate:")
    assert _scalar(postgres_server.url, "select 1") == 1
    assert _scalar(postgres_server.url, "select current_database()") == "casemate"


@pytest.mark.pg
@pytest.mark.parametrize("run", [1, 2])
def test_postgres_database_is_fresh_per_test(postgres_url: str, run: int) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                text("select count(*) from pg_tables where schemaname = 'public'")
            ).scalar_one()
            assert tables == 0
            conn.execute(text("create table marker (run int)"))
            conn.execute(text("insert into marker values (:run)"), {"run": run})
        with engine.connect() as conn:
            assert conn.execute(text("select run from marker")).scalar_one() == run
    finally:
        engine.dispose()


@pytest.mark.mqtt
@pytest.mark.pg
@pytest.mark.parametrize("server_class", [MosquittoBroker, PostgresServer])
def test_stop_leaves_no_process(server_class) -> None:
    directory = Path(tempfile.mkdtemp(prefix="cms-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        server = server_class(directory / server_class.name)
        with server:
            assert tcp_answers(server.port)
            assert server.log_path.stat().st_size > 0
            group = server.pid
            assert _group_members(group)
        assert not tcp_answers(server.port)
        assert _group_members(group) == []
    finally:
        shutil.rmtree(directory)


def _group_members(pgid: int) -> list[int]:
    """Processes in process group ``pgid`` (a server and whatever it forked)."""
    members = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            members.append(int(path.parent.name))
    return members
