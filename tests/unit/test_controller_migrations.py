"""The Alembic migrations build exactly the schema the models describe; init runs once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from controller.db import Database, upgrade_to_head
from controller.models import Base
from tests.controller_factories import sqlite_url


def test_migrations_match_models(tmp_path):
    db = Database(sqlite_url(tmp_path))
    upgrade_to_head(db)
    upgrade_to_head(db)  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
        assert diff == []
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    assert "alembic_version" in inspect(db.engine).get_table_names()
    db.dispose()


def test_init_prints_tokens_once_and_serve_cli_exists(tmp_path):
    env = {**os.environ, "MINIECS_STATE_DIR": str(tmp_path / "state")}
    cmd = [sys.executable, "-m", "controller.server_cli", "init", "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    tokens = json.loads(first.stdout)
    assert tokens["admin_token"].startswith("mecs_")
    assert tokens["enrolment_token"].startswith("mecse_")
    assert tokens["admin_token"] not in first.stderr
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "already initialised" in second.stderr
    assert "mecs_" not in second.stdout
    # Only hashes are stored.
    db_file = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("controller.db*"))
    assert len(db_file) > 10_000
    assert tokens["admin_token"].encode() not in db_file
    assert tokens["enrolment_token"].encode() not in db_file
