"""A controller start at head skips Alembic (controller/db.py ``at_head``), and only then:
the heads read from the scripts' lines are Alembic's own, a new or behind database still
gets every migration."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from controller import db as dbmod
from controller.db import Database, alembic_config, at_head, script_heads, upgrade_to_head
from tests.controller_factories import sqlite_url


def test_heads_read_from_the_scripts_are_alembics():
    alembic = set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())
    assert script_heads() == alembic


def test_at_head_only_when_the_recorded_revisions_are_the_heads(tmp_path, monkeypatch):
    db = Database(sqlite_url(tmp_path))
    assert not at_head(db)  # new database: no alembic_version table
    upgrade_to_head(db)
    assert at_head(db)
    heads = script_heads()

    def record(*revisions: str) -> None:
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            for rev in revisions:
                conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": rev})

    record("0003")  # recorded as behind
    assert not at_head(db)
    record(*heads, "0003")
    assert not at_head(db)
    record(*heads)
    assert at_head(db)

    def no_alembic(*_a, **_k):
        raise AssertionError("Alembic loaded at head")

    monkeypatch.setattr(dbmod, "alembic_config", no_alembic)
    upgrade_to_head(db)  # at head: not even Alembic's config is made
    assert "alembic_version" in inspect(db.engine).get_table_names()
    db.dispose()


def test_a_version_line_it_cannot_read_falls_back_to_alembic(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text("revision = '0001'\ndown_revision = None\n")
    (versions / "0002_b.py").write_text("revision = '0002'\ndown_revision = (\n    '0001',\n)\n")
    monkeypatch.setattr(dbmod, "MIGRATIONS_DIR", tmp_path)
    assert script_heads() is None
    (versions / "0002_b.py").write_text("revision = '0002'\ndown_revision = ('0001',)\n")
    assert script_heads() == {"0002"}
