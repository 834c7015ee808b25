"""Alembic environment: runs on the connection handed over by ``casemate.core.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import casemate.core.models  # noqa: F401 - registers the tables on Base.metadata
from casemate.core.db import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("casemate migrations run through casemate.core.db.migrate()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
