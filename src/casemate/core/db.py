"""Storage: one SQLAlchemy engine, SQLite (WAL) by default, PostgreSQL by URL.

Migrations (Alembic, in ``casemate/migrations``) are applied on start. Database errors are
translated into :class:`~casemate.errors.UpstreamError` at this boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from casemate.errors import ConfigError, InvalidInput, UpstreamError

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    """Declarative base of every Casemate table."""


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already (clocks, SQLite)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def aware_utc(value: datetime, name: str) -> datetime:
    """A caller's ``value`` (a query bound, an argument) in UTC; a naive one is refused with
    :class:`~casemate.errors.InvalidInput` naming ``name`` (its zone would be a guess)."""
    if value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp column that always hands back an aware UTC ``datetime``.

    Every Casemate timestamp column uses it (``mapped_column(UtcDateTime)``), so no reader
    needs a helper of its own. Values are written in UTC: SQLite keeps the wall-clock fields
    only, and compares them as text, so an aware value in another zone would be stored (and
    compared) wrongly. SQLite hands back naive values, PostgreSQL aware ones in the session's
    zone; both come back as aware UTC. A naive value written is taken to be UTC. The storage
    type is ``DateTime(timezone=True)``, as in the migrations.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit off at the driver level; SQLAlchemy's "begin" event below starts an
        # IMMEDIATE transaction so writers queue on the lock instead of failing to upgrade.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return on_connect


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create the engine for ``url``; SQLite files get WAL, foreign keys and busy timeouts."""
    try:
        parsed = make_url(url)
    except Exception as e:  # any parse error is a config error
        raise ConfigError("the database URL cannot be parsed") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_synchronous))

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            readonly = conn.get_execution_options().get("casemate_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    raise ConfigError(f"unsupported database backend {parsed.get_backend_name()!r}")


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration up to head."""
    from alembic import command
    from alembic.config import Config

    script_location = str(resources.files("casemate") / "migrations")
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as e:
        raise UpstreamError(f"database migration failed: {type(e).__name__}") from e


class Database:
    """Engine plus session factory; the one handle features get for storage."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(
            engine.execution_options(casemate_readonly=True), expire_on_commit=False
        )

    @classmethod
    def open(
        cls, url: str, *, sqlite_synchronous: str = "FULL", run_migrations: bool = True
    ) -> Database:
        db = cls(make_engine(url, sqlite_synchronous=sqlite_synchronous))
        if run_migrations:
            migrate(db.engine)
        return db

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error.

        Database failures become ``UpstreamError`` with no SQL or parameters in the message
        (parameters may hold secrets).
        """
        s = self._sessions()
        try:
            yield s
            s.commit()
        except SQLAlchemyError as e:
            s.rollback()
            raise UpstreamError(f"database error: {type(e).__name__}") from e
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only unit of work (on SQLite it does not take the write lock)."""
        s = self._readers()
        try:
            yield s
            s.rollback()
        except SQLAlchemyError as e:
            s.rollback()
            raise UpstreamError(f"database error: {type(e).__name__}") from e
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
