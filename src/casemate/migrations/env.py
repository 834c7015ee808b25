"""Alembic environment: runs on the connection handed over by ``casemate.core.db.migrate``."""

from __future__ import annotations

import importlib

from alembic import context
from sqlalchemy import Connection

from casemate.core.db import Base

#: Every module that defines tables on ``Base``: all of them are imported, so the metadata
#: autogenerate compares with the database is the whole schema (a module missing here would
#: make autogenerate propose dropping its tables). ``tests/core/test_migrations.py`` checks
#: this list against the source.
MODEL_MODULES = (
    "casemate.core.models",
    "casemate.core.sso.links",
    "casemate.k8s.models",
    "casemate.bastion.models",
    "casemate.bastion.artifacts",
    "casemate.kubeproxy.sessions",
    "casemate.edge.models",
    "casemate.edge.proxy_models",
    "casemate.posture.exception_store",
    "casemate.gateway.sshkeys",
)

for _module in MODEL_MODULES:
    importlib.import_module(_module)

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
