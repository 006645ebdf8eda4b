"""Test data for the controller, in one place: databases, a region behind a TestClient,
and a fake agent that is just HTTP calls to the agent endpoints.

Each test owns its data: a fresh SQLite file, or a fresh PostgreSQL database
created for the test and dropped after it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from controller import ids
from controller.config import Settings
from controller.db import Database, upgrade_to_head
from controller.models import Image
from controller.services.api_tokens import Bootstrap, bootstrap

PG_ENV = "MINIECS_TEST_PG_URL"
# MINIECS_TEST_DB=postgres: the fixtures that default to SQLite (``region``, the end-to-end
# controller) use a fresh PostgreSQL database on the server of MINIECS_TEST_PG_URL instead.
TEST_DB_ENV = "MINIECS_TEST_DB"


def on_postgres() -> bool:
    return os.environ.get(TEST_DB_ENV, "sqlite").lower() in ("postgres", "postgresql", "pg")


@contextlib.contextmanager
def default_database(tmp_path: Path | None = None) -> Iterator[str]:
    """The URL of a fresh database for one test (or module): SQLite, or PostgreSQL when
    MINIECS_TEST_DB=postgres (then MINIECS_TEST_PG_URL must be set; it is dropped after)."""
    if not on_postgres():
        assert tmp_path is not None, "SQLite needs a directory"
        yield sqlite_url(tmp_path)
        return
    base = os.environ.get(PG_ENV)
    if not base:
        raise RuntimeError(f"{TEST_DB_ENV}=postgres needs {PG_ENV} (make test-pg sets it)")
    url = create_pg_database(base)
    try:
        yield url
    finally:
        drop_pg_database(url)


# ---- databases ---------------------------------------------------------------------

def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'controller.db'}"


def _pg_admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


# Migrating a fresh database costs far more than copying one (alembic loads every
# revision, then runs its DDL): each test process migrates one template database per
# backend and every test gets a copy of it. upgrade_to_head on the copy is a no-op
# that still checks it is at head; the migrations themselves still run (on the
# template, and from scratch in tests/unit/test_controller_migrations.py).
_templates: dict[str, str] = {}


def _pg_template(base_url: str) -> str:
    """The name of this process's migrated template database on ``base_url``'s server."""
    if base_url not in _templates:
        name = f"miniecs_tpl_{os.getpid()}_{secrets.token_hex(3)}"
        engine = create_engine(_pg_admin_url(base_url), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
        atexit.register(drop_pg_database, url)
        db = Database(url)
        upgrade_to_head(db)
        db.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections
        _templates[base_url] = name
    return _templates[base_url]


def create_pg_database(base_url: str) -> str:
    """A fresh database on the server of ``base_url``, its schema at head (a copy of
    the migrated template); returns its URL."""
    template = _pg_template(base_url)
    name = "miniecs_ctl_" + secrets.token_hex(6)
    engine = create_engine(_pg_admin_url(base_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    engine.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def _copy_sqlite_template(url: str) -> None:
    """Put a copy of this process's migrated SQLite database at ``url`` if no file is there."""
    path = Path(make_url(url).database or "")
    if not str(path) or path.exists():
        return
    if "sqlite" not in _templates:
        tpl_dir = Path(tempfile.mkdtemp(prefix="miniecs-tpl-"))
        atexit.register(shutil.rmtree, tpl_dir, True)
        db = Database(sqlite_url(tpl_dir))
        upgrade_to_head(db)
        db.dispose()
        _templates["sqlite"] = str(tpl_dir / "controller.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(_templates["sqlite"]) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    engine = create_engine(_pg_admin_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def default_db_url(tmp_path) -> Iterator[str]:
    """The URL of a fresh database of the backend MINIECS_TEST_DB names (SQLite by default)."""
    with default_database(tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """A fresh database of each backend (PostgreSQL skipped only when MINIECS_TEST_PG_URL
    is unset)."""
    if request.param == "sqlite":
        if on_postgres():
            pytest.skip(f"{TEST_DB_ENV}=postgres: PostgreSQL only")
        yield sqlite_url(tmp_path)
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    url = create_pg_database(base)
    try:
        yield url
    finally:
        drop_pg_database(url)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {"state_dir": tmp_path, "spec_poll_interval_s": 0.2, **overrides}
    return Settings(**values)


def open_database(url: str) -> tuple[Database, Bootstrap]:
    if url.startswith("sqlite"):
        _copy_sqlite_template(url)
    db = Database(url)
    upgrade_to_head(db)
    return db, bootstrap(db, "zone-a")


def add_image(db: Database, settings: Settings, name: str = "tiny",
              virtual_size_gib: int = 1, content: bytes = b"QFI\xfb" + b"\0" * 508) -> str:
    """An Available image row with a file in the store (skips the import pipeline)."""
    image_id = ids.new_id("image")
    store = settings.effective_image_store_dir
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{image_id}.qcow2"
    path.write_bytes(content)
    with db.write() as session:
        session.add(Image(id=image_id, name=name, format="qcow2", source="factory",
                          sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content),
                          virtual_size_bytes=virtual_size_gib * 1024 ** 3,
                          min_disk_gib=virtual_size_gib, status="Available", path=str(path),
                          created_at=datetime.now(UTC)))
    return image_id


# ---- a region driven over HTTP ----------------------------------------------------

@dataclass
class FakeAgent:
    """An agent reduced to its HTTP calls: register, fetch the spec, report."""

    client: object
    host_id: str
    token: str
    seen: int = -1
    observed: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def spec(self, after: int = -1, wait: float = 0) -> dict:
        r = self.client.get("/api/v1/agent/spec", params={"after": after, "wait": wait},
                            headers=self.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        self.seen = max(self.seen, body["generation"])
        return body

    def report(self, instances: dict[str, str] | None = None, operations=(), errors=(),
               applied: int | None = None, extra: list[dict] | None = None) -> None:
        """Report ``{instance_id: power}`` (default: what was last reported)."""
        if instances is not None:
            self.observed = dict(instances)
        body = {"host_id": self.host_id,
                "generation_applied": self.seen if applied is None else applied,
                "generation_seen": self.seen,
                "instances": [{"id": i, "power": p} for i, p in self.observed.items()]
                + list(extra or []),
                "operations": list(operations), "errors": list(errors)}
        r = self.client.post("/api/v1/agent/report", json=body, headers=self.headers)
        assert r.status_code == 204, r.text

    def converge(self) -> dict:
        """Fetch the spec and report every instance in it as its desired power."""
        spec = self.spec()
        self.report({i["id"]: i["power"] for i in spec["instances"]})
        return spec


class Region:
    """A controller app with a fresh database, an admin client, and helpers."""

    def __init__(self, client, db: Database, settings: Settings, tokens: Bootstrap) -> None:
        self.client = client
        self.db = db
        self.settings = settings
        self.tokens = tokens
        self.headers = {"Authorization": f"Bearer {tokens.admin_token}"}

    def call(self, method: str, path: str, json=None, **params):
        return self.client.request(method, "/api/v1" + path, json=json, params=params or None,
                                   headers=self.headers)

    def ok(self, method: str, path: str, json=None, **params) -> dict:
        r = self.call(method, path, json, **params)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def items(self, path: str, **params) -> list[dict]:
        return self.ok("GET", path, **params)["items"]

    def register_host(self, name: str = "hv-01", zone: str = "zone-a", vcpus: int = 4,
                      memory_mib: int = 8192, disk_gib: int = 100, heartbeat: bool = True,
                      underlay: str = "192.0.2.11") -> FakeAgent:
        r = self.client.post("/api/v1/agent/register", json={
            "name": name, "zone": zone, "underlay_address": underlay, "virt_type": "qemu",
            "capacity": {"vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib}},
            headers={"Authorization": f"Bearer {self.tokens.enrolment_token}"})
        assert r.status_code in (200, 201), r.text
        agent = FakeAgent(self.client, r.json()["host_id"], r.json()["host_token"])
        if heartbeat:
            agent.report({})
        return agent

    def network(self, vpc_cidr: str = "10.0.0.0/16", vsw_cidr: str = "10.0.1.0/24",
                zone: str = "zone-a") -> dict:
        vpc = self.ok("POST", "/vpcs", {"name": "vpc1", "cidr_block": vpc_cidr})
        vsw = self.ok("POST", "/vswitches", {"name": "vsw1", "vpc_id": vpc["id"],
                                             "zone_id": zone, "cidr_block": vsw_cidr})
        sg = self.ok("POST", "/security-groups", {"name": "sg1", "vpc_id": vpc["id"]})
        return {"vpc": vpc, "vswitch": vsw, "sg": sg}

    def image(self, **kwargs) -> str:
        return add_image(self.db, self.settings, **kwargs)

    def instance_body(self, net: dict, image: str, **overrides) -> dict:
        body = {"name": "web-1", "instance_type": "ecs.t1.nano", "image_id": image,
                "vswitch_id": net["vswitch"]["id"], "security_group_ids": [net["sg"]["id"]]}
        body.update(overrides)
        return body

    def create_instance(self, net: dict, image: str, **overrides) -> dict:
        return self.ok("POST", "/instances", self.instance_body(net, image, **overrides))


@pytest.fixture
def region(tmp_path) -> Iterator[Region]:
    """A region on a fresh SQLite database, served through FastAPI's TestClient."""
    from fastapi.testclient import TestClient

    from controller.app import create_app

    settings = make_settings(tmp_path)
    with default_database(tmp_path) as url:
        db, tokens = open_database(url)
        with TestClient(create_app(settings, db)) as client:
            yield Region(client, db, settings, tokens)
        db.dispose()


@pytest.fixture
def region_any_db(database_url, tmp_path) -> Iterator[Region]:
    """Like ``region``, on each backend of ``database_url`` (SQLite and PostgreSQL)."""
    from fastapi.testclient import TestClient

    from controller.app import create_app

    settings = make_settings(tmp_path)
    db, tokens = open_database(database_url)
    with TestClient(create_app(settings, db)) as client:
        yield Region(client, db, settings, tokens)
    db.dispose()


@contextlib.contextmanager
def sql_statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements ``db`` sends inside the block (for tests that count queries)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement.strip())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
