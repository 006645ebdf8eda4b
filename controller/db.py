"""Engine, sessions and migrations.

``Database.write()`` is the one way to change state: one transaction, committed
on success, rolled back on any exception. On SQLite it starts with
``BEGIN IMMEDIATE`` so writers are serialised from their first statement (no
read-then-upgrade deadlocks, no lost updates); on PostgreSQL the services lock
the rows they decide on with ``SELECT ... FOR UPDATE``. ``Database.read()`` is a
plain (deferred) transaction, which in WAL mode never blocks writers.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# deadlock_detected, serialization_failure: the transaction was rolled back whole
RETRYABLE_SQLSTATES = {"40P01", "40001"}
T = TypeVar("T")


# Page cache of each SQLite connection, KiB. SQLite's default is 2 MiB a connection, and
# the pool keeps up to 80 of them (one per thread that may read at once): up to 160 MiB
# of the controller's memory at rest, mostly the same pages over again. And they were
# rarely hits: in WAL mode a connection drops its whole cache when a read transaction
# starts after another connection's commit, which on a controller (heartbeats, reports)
# is nearly every time. Pages not in a connection's cache are read from the operating
# system's (one copy for all). Measured: RSS at rest 382 -> 325 MiB at 4,000 instances,
# list p99 and create rates within the run-to-run noise.
SQLITE_CACHE_KIB = 512


def create_db_engine(url: str, *, busy_timeout_ms: int = 30000) -> Engine:
    """An engine for ``url``; SQLite gets WAL, busy_timeout, foreign keys and explicit BEGINs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_size=20, max_overflow=30)
        _ping_when_idle(engine)
        return engine

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # As many pooled connections as the threads that may read at once (the API's 40,
    # the agents' spec and report threads): with 10, every call beyond opened a
    # connection, ran its PRAGMAs and closed it again (a tenth of a busy controller).
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           pool_size=64, max_overflow=16)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# A pooled PostgreSQL connection idle this long is pinged before use.
IDLE_PING_S = 30.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle ``IDLE_PING_S``.

    ``pool_pre_ping`` pinged on every checkout: a round trip per transaction, a third
    of the CPU of an agent's heartbeat. A connection in steady use fails loudly if the
    server went away (SQLAlchemy then invalidates the whole pool, so the others are
    replaced too); one that sat idle, where a restart of PostgreSQL goes unnoticed, is
    pinged and, when dead, replaced before the caller sees it (``DisconnectionError``
    makes the pool check out a fresh one).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy) -> None:
        last = record.info.get("checked_in_at")
        if last is None or time.monotonic() - last < IDLE_PING_S:
            return
        try:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1")
            cur.close()
            dbapi_conn.rollback()
        except Exception as exc:  # noqa: BLE001 - any failure: a fresh connection
            raise DisconnectionError(f"idle connection is dead: {exc}") from exc


class FairLock:
    """A re-entrant lock granted in arrival order.

    ``threading.RLock`` lets whichever waiter the OS wakes first take it: under a storm of
    short writers (agent reports) a long one (a batch create) could wait indefinitely.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> "FairLock":
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return self
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket or self._owner is not None:
                self._cond.wait()
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                self._cond.notify_all()


class Database:
    """An engine plus the two kinds of session the services use."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 30000) -> None:
        self.url = url
        self.engine = create_db_engine(url, busy_timeout_ms=busy_timeout_ms)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        write_engine = self.engine.execution_options(sqlite_immediate=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)
        self._after_commit: list[Callable[[Session], None]] = []
        # SQLite has one writer; its busy handler sleeps and retries, which under a
        # storm of writers in this process starves some past busy_timeout. Queue
        # this process's writers on a lock instead (other processes still meet
        # the busy handler), in arrival order.
        self._sqlite_writer = FairLock() if self.is_sqlite else None

        @event.listens_for(self._write, "after_commit")
        def _run_after_commit(session: Session) -> None:
            for hook in self._after_commit:
                hook(session)

    def on_commit(self, hook: Callable[[Session], None]) -> None:
        """Call ``hook(session)`` after every committed write (e.g. wake spec long-polls)."""
        self._after_commit.append(hook)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        if self._sqlite_writer is None:
            with self._write() as session, session.begin():
                yield session
            return
        with self._sqlite_writer, self._write() as session, session.begin():
            yield session

    def write_retrying(self, fn: Callable[[Session], T], *, attempts: int = 8) -> T:
        """Run ``fn`` in a write transaction, retrying when a unique constraint races.

        Concurrent creates may draw the same random MAC or id, or the same client
        token; the constraint is the final guard, and a fresh attempt sees the
        winner's row (and ``fn`` then answers accordingly).
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.write() as session:
                    return fn(session)
            except IntegrityError:
                if attempt == attempts:
                    raise
                log.info("write raced on a unique constraint; retrying (%d/%d)", attempt, attempts)
            except OperationalError as exc:
                # PostgreSQL chose this transaction as a deadlock victim (two batch creates
                # lock their members' hosts in different orders) or could not serialise
                # it; it was rolled back whole, so running it again is safe
                if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES \
                        or attempt == attempts:
                    raise
                log.info("write was a deadlock victim; retrying (%d/%d)", attempt, attempts)
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> "AlembicConfig":
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_ASSIGN = r"^{name}\s*(?::[^=\n]*)?=\s*(.+)$"


def script_heads() -> set[str] | None:
    """The head revisions of ``migrations/versions``, read from the files' ``revision`` and
    ``down_revision`` lines without importing them; None when a file is not that plain."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text()
        rev = re.search(_ASSIGN.format(name="revision"), text, re.M)
        down = re.search(_ASSIGN.format(name="down_revision"), text, re.M)
        names = re.fullmatch(r"""\s*['"]([^'"]+)['"]\s*""", rev.group(1)) if rev else None
        if names is None or down is None:
            return None
        value = down.group(1).strip()
        found = re.findall(r"""['"]([^'"]+)['"]""", value)
        if value != "None" and not (found and value.endswith((")", "]", "'", '"'))):
            return None  # spread over lines, or computed: let Alembic read it
        revisions.add(names.group(1))
        parents.update(found)
    return (revisions - parents) or None


def at_head(db: Database) -> bool:
    """True when the database's recorded revisions are exactly the scripts' heads."""
    heads = script_heads()
    if not heads:
        return False
    try:
        with db.engine.connect() as conn:
            have = {row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
    except SQLAlchemyError:
        return False  # a new database: no alembic_version yet
    return have == heads


def upgrade_to_head(db: Database) -> None:
    """Apply every pending migration (idempotent).

    At head (every start of a serving controller) this is one query and a read of the
    scripts' revision lines; Alembic (~0.2 s of CPU to import and load its scripts) is
    only brought in when there is something to do.
    """
    if at_head(db):
        return
    from alembic import command

    with migration_connection(db) as conn:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")  # feature branches may add parallel heads


@contextmanager
def migration_connection(db: Database) -> Iterator[Connection]:
    """A connection in one transaction for Alembic; on SQLite with foreign keys off.

    SQLite cannot drop a constraint in place: Alembic's batch mode copies the table,
    drops the old one and renames the copy. With foreign keys on, that DROP TABLE
    first deletes every row, which fires ``ON DELETE CASCADE`` in the child tables
    (an instance's disks and NICs would go). ``PRAGMA foreign_keys`` only changes
    outside a transaction, so it is turned off before BEGIN, the references are
    checked (``PRAGMA foreign_key_check``) before COMMIT, and it is on again after.
    """
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection if db.is_sqlite else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if raw is not None:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")
