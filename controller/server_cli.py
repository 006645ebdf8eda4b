"""``miniecs-controller``: initialise the database and serve the API."""

from __future__ import annotations

import fcntl
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from controller.config import Settings

if TYPE_CHECKING:
    from controller.db import Database

app = typer.Typer(help="miniecs controller daemon", no_args_is_help=True, add_completion=False)

StateDir = Annotated[Path | None, typer.Option(help="State directory (env MINIECS_STATE_DIR)")]
DbUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL (env MINIECS_DATABASE_URL); "
                                           "default SQLite under the state directory")]


def _settings(state_dir: Path | None, database_url: str | None, **extra) -> Settings:
    overrides = {k: v for k, v in {"state_dir": state_dir, "database_url": database_url,
                                   **extra}.items() if v is not None}
    return Settings(**overrides)


def _logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _open(settings: Settings) -> "Database":
    from controller.db import Database, upgrade_to_head

    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.effective_database_url,
                  busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    upgrade_to_head(db)
    return db


@app.command()
def init(state_dir: StateDir = None, database_url: DbUrl = None,
         default_zone: Annotated[str, typer.Option(help="Zone to create ('' for none)")]
         = "zone-a",
         json_output: Annotated[bool, typer.Option("--json", help="Print the tokens as JSON")]
         = False,
         tls: Annotated[bool, typer.Option("--tls", help="Make a private CA and a server "
                                           "certificate; `serve` then speaks HTTPS")] = False,
         tls_name: Annotated[list[str] | None, typer.Option(
             help="Extra DNS name or IP for the certificate (repeatable)")] = None) -> None:
    """Create the database, seed instance types and a zone, print the first tokens (once)."""
    from controller.services.api_tokens import bootstrap

    _logging("warning")
    settings = _settings(state_dir, database_url)
    db = _open(settings)
    settings.effective_image_store_dir.mkdir(parents=True, exist_ok=True)
    result = bootstrap(db, default_zone or None)
    db.dispose()
    if result is None:
        typer.echo("already initialised; tokens are shown only once "
                   "(use `miniecs-controller token create` / `enrolment-token rotate`)", err=True)
        raise typer.Exit(code=1)
    ca_file = None
    if tls:
        from controller.tls import create_tls

        host, _ = settings.listen_host_port
        names = [*(tls_name or []), *([host] if host not in ("0.0.0.0", "::") else [])]
        ca_file = str(create_tls(settings.state_dir / "tls", names).ca_cert)
    if json_output:
        typer.echo(json.dumps({"admin_token": result.admin_token,
                               "enrolment_token": result.enrolment_token, "ca_file": ca_file}))
        return
    typer.echo(f"admin_token: {result.admin_token}")
    typer.echo(f"enrolment_token: {result.enrolment_token}")
    if ca_file:
        typer.echo(f"ca_file: {ca_file}  (give it to the CLI and the agents)")


@app.command()
def serve(listen: Annotated[str | None, typer.Option(help="ADDR:PORT (env MINIECS_LISTEN)")]
          = None, state_dir: StateDir = None, database_url: DbUrl = None,
          log_level: Annotated[str, typer.Option(help="Log level")] = "info") -> None:
    """Apply pending migrations and serve the REST API."""
    from controller.listener import ListenError, bind_listeners

    _logging(log_level)
    _limit_malloc_arenas()  # before any thread starts
    settings = _settings(state_dir, database_url, listen=listen)
    host, port = settings.listen_host_port
    # Listen first: clients connecting while the rest starts are queued, not refused
    # (controller/listener.py); the application, SQLAlchemy and uvicorn load after.
    try:
        sockets = bind_listeners(host, port)
    except ListenError as exc:
        typer.echo(f"miniecs-controller: {exc}", err=True)
        raise typer.Exit(code=1) from None
    tls = settings.effective_tls
    logging.getLogger("controller").info(
        "listening on %s://%s:%d; answering once started", "https" if tls else "http",
        host, port)

    import uvicorn

    from controller.app import create_app

    db = _open(settings)
    _log_long_gc_pauses()
    app_ = create_app(settings, db)
    _tune_gc()
    # held (shared) while serving, so `restore` can tell the database is live
    lock = open(settings.state_dir / "controller.lock", "a")  # noqa: SIM115 - lives as long as we do
    fcntl.flock(lock, fcntl.LOCK_SH)
    # access_log off: a request line is harmless, but agents poll constantly.
    ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    # Long-lived answers (console streams, tunnels, spec long-polls) never end by
    # themselves: on shutdown they get 5 s, then are cancelled (clients reconnect).
    server = uvicorn.Server(uvicorn.Config(
        app_, host=host, port=port, log_level=log_level.lower(),
        access_log=False, timeout_graceful_shutdown=5, **ssl))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise typer.Exit(code=3)  # uvicorn's start-up failure code; the reason is logged


def _tune_gc() -> None:
    """Keep the collector's full passes rarer and shorter. With CPython's defaults (700,
    10, 10) a busy controller (500 agents) ran a full collection every few seconds, each
    stopping every thread for 300-400 ms to find a few hundred cyclic objects: spikes in
    every route's latency. Everything alive once the app is built (modules, routes,
    models, SQLAlchemy's metadata: 130,000 objects, ~90 ms of each full pass) is moved
    out of the collector's sight (``gc.freeze``). What stays is mostly the 500 agents'
    waiting long-polls (coroutines, closures, middleware frames: ~110,000 objects, still
    200-300 ms a pass on these machines); they outlive the young generations and then
    die by reference counting, so full passes found a few hundred to a few thousand
    cyclic objects each. A full pass now waits for 1,000 younger ones instead of 10
    (minutes apart instead of seconds; the cyclic garbage they would have found waits
    that long). A young generation of 50,000 was tried: fewer passes, but each freed
    ~45,000 ORM objects at once, 120-280 ms."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1000)


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let the controller's threads share ``arenas`` malloc arenas (glibc), unless the
    operator set ``MALLOC_ARENA_MAX``. glibc gives threads up to 8 arenas per core, and a
    controller runs some 60 threads (the API's, the agents' spec and report threads):
    memory a thread freed stayed in its arena, held for that thread. Python's own small
    objects do not come from these arenas; SQLite's, psycopg's, pydantic's and large
    buffers do. Measured (500 hosts, 4,000 instances, SQLite): RSS at rest 480 -> 382 MiB,
    create rates within the run-to-run noise. True when applied."""
    import ctypes
    import os

    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # glibc read the operator's own choice at start
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    return mallopt(_M_ARENA_MAX, arenas) == 1


def _log_long_gc_pauses(threshold_s: float = 0.1) -> None:
    """Log every garbage collection that stops the process for more than ``threshold_s``
    (every thread waits for it: a long one shows as a latency spike on every route)."""
    import gc
    import time

    log = logging.getLogger("controller.gc")
    started = [0.0]

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took > threshold_s:
            log.info("garbage collection of generation %d stopped the controller %.0f ms "
                     "(%d objects collected)", info["generation"], took * 1000,
                     info["collected"])

    gc.callbacks.append(watch)


token_app = typer.Typer(help="Admin API tokens", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(name: Annotated[str, typer.Argument(help="What the token is for")],
                 state_dir: StateDir = None, database_url: DbUrl = None) -> None:
    """Mint another admin API token (printed once)."""
    from controller.schemas.tokens import ApiTokenCreate
    from controller.services.api_tokens import create_api_token

    db = _open(_settings(state_dir, database_url))
    typer.echo(create_api_token(db, ApiTokenCreate(name=name)).token)


enrol_app = typer.Typer(help="The region's host enrolment token", no_args_is_help=True)
app.add_typer(enrol_app, name="enrolment-token")


@enrol_app.command("rotate")
def enrolment_rotate(state_dir: StateDir = None, database_url: DbUrl = None) -> None:
    """Replace the enrolment token (printed once); enrolled hosts keep their own tokens."""
    from controller.services.api_tokens import rotate_enrolment_token

    db = _open(_settings(state_dir, database_url))
    typer.echo(rotate_enrolment_token(db))


@app.command("install-unit")
def install_unit_cmd(
        user: Annotated[str, typer.Option(help="System user the controller runs as "
                                          "(created if missing)")] = "miniecs",
        listen: Annotated[str, typer.Option(help="MINIECS_LISTEN for a new "
                                            "/etc/miniecs/controller.env")] = "0.0.0.0:8080",
        dest: Annotated[Path, typer.Option(help="Unit directory; another one only writes the "
                                           "file")] = Path("/etc/systemd/system"),
        now: Annotated[bool, typer.Option("--now", help="Enable and (re)start it")] = False
) -> None:
    """Install miniecs-controller.service (state in /var/lib/miniecs-controller)."""
    from agent.units import systemd_is_init
    from controller.install_unit import install

    for line in install(user, listen, dest, start=now):
        typer.echo(line)
    if not systemd_is_init():
        typer.echo("systemd is not PID 1 here: the unit is installed but not started", err=True)


def _sqlite_path(settings: Settings) -> Path:
    from sqlalchemy.engine import make_url

    url = make_url(settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        typer.echo("backup/restore handle the SQLite default; for PostgreSQL use pg_dump and "
                   "pg_restore (see docs/operations.md)", err=True)
        raise typer.Exit(code=2)
    return Path(url.database)


@app.command()
def backup(file: Annotated[Path, typer.Argument(help="Where to write the backup")],
           state_dir: StateDir = None, database_url: DbUrl = None) -> None:
    """Copy the SQLite database online and consistently (the controller may keep running)."""
    from controller import backup as backups

    info = backups.backup_sqlite(_sqlite_path(_settings(state_dir, database_url)), file)
    typer.echo(f"backup written to {file}: {info}")


@app.command()
def restore(file: Annotated[Path, typer.Argument(help="A file made by `backup`")],
            state_dir: StateDir = None, database_url: DbUrl = None) -> None:
    """Replace the SQLite database with a backup (stop the controller first)."""
    settings = _settings(state_dir, database_url)
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(settings.state_dir / "controller.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            typer.echo("restore refused: a controller is serving this state directory; "
                       "stop it first", err=True)
            raise typer.Exit(code=1) from None
        _restore_locked(file, settings)


def _restore_locked(file: Path, settings: Settings) -> None:
    from controller import backup as backups

    try:
        kept = backups.restore_sqlite(file, _sqlite_path(settings))
    except backups.BackupError as exc:
        typer.echo(f"restore refused: {exc}", err=True)
        raise typer.Exit(code=1) from None
    db = _open(settings)  # bring an older backup up to the current schema
    db.dispose()
    typer.echo(f"restored {file}; the replaced database is kept as {kept}")


if __name__ == "__main__":
    app()
