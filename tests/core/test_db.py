from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from casemate.core.db import Database, make_engine
from casemate.errors import ConfigError, UpstreamError


def test_migrations_create_the_foundation_tables(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "groups", "api_tokens", "vault_secrets", "audit_records"} <= tables
    assert "alembic_version" in tables


def test_migrations_are_idempotent(db: Database) -> None:
    from casemate.core.db import migrate

    migrate(db.engine)
    with db.reader() as s:
        assert s.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'x.db'}")
    with db.reader() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    db.dispose()


def test_database_errors_are_translated_without_sql(db: Database) -> None:
    with pytest.raises(UpstreamError) as e, db.session() as s:
        s.execute(text("INSERT INTO users (id) VALUES ('secret-param-value')"))
    assert "secret-param-value" not in str(e.value)
    assert "INSERT" not in str(e.value)


@pytest.mark.parametrize("url", ["not a url", "mysql://u:p@h/db"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        make_engine(url)


def test_rollback_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        s.execute(text("INSERT INTO casemate_meta (key, value) VALUES ('k', '1')"))
        raise RuntimeError("boom")
    with db.reader() as s:
        assert s.execute(text("SELECT count(*) FROM casemate_meta")).scalar_one() == 0


def test_timestamp_columns_read_back_aware_utc(db: Database) -> None:
    """One column type for every timestamp: SQLite (naive) and PostgreSQL (aware, any session
    zone) both hand back aware UTC values, and a value in another zone is stored as UTC."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import select

    from casemate.core.models import User

    plus_two = timezone(timedelta(hours=2))
    written = datetime(2026, 3, 1, 14, 0, tzinfo=plus_two)
    with db.session() as s:
        if db.engine.dialect.name == "postgresql":
            s.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
        s.add(User(username="tz", created_at=written, locked_until=datetime(2026, 3, 1, 12, 0)))
    with db.reader() as s:
        if db.engine.dialect.name == "postgresql":
            s.execute(text("SET TIME ZONE 'Asia/Tokyo'"))
        user = s.scalars(select(User).where(User.username == "tz")).one()
        assert user.created_at == written
        assert user.created_at.tzinfo is UTC
        assert user.created_at.hour == 12
        assert user.locked_until == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        assert user.locked_until is not None and user.locked_until.tzinfo is UTC
        # comparisons bind in UTC too: on SQLite they compare the stored text
        later = datetime(2026, 3, 1, 13, 30, tzinfo=plus_two)  # 11:30 UTC
        found = s.scalars(select(User.username).where(User.created_at > later)).all()
        assert found == ["tz"]
