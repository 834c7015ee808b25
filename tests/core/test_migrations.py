"""The migrations and the models agree: on a database migrated to head, Alembic's autogenerate
finds nothing to add, drop or change (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import casemate
from casemate.core.db import Base, Database

SRC = Path(casemate.__file__).parent


def _model_modules() -> tuple[str, ...]:
    """MODEL_MODULES of migrations/env.py, read without running Alembic's context."""
    tree = ast.parse((SRC / "migrations" / "env.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MODEL_MODULES":
            value: Any = ast.literal_eval(node.value)
            return tuple(value)
    raise AssertionError("migrations/env.py has no MODEL_MODULES")


def test_every_module_with_tables_is_registered() -> None:
    defining = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        if any(
            isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "Base" for b in node.bases)
            for node in tree.body
        ):
            module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
            defining.add(module)
    assert defining == set(_model_modules())


def test_autogenerate_proposes_nothing_on_a_migrated_database(db: Database) -> None:
    for module in _model_modules():
        importlib.import_module(module)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "render_as_batch": conn.dialect.name == "sqlite"}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
