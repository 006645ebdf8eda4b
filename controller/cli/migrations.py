"""``miniecs instance migrate``, ``miniecs host maintenance|drain|evacuate``,
``miniecs migration``.

The commands join the ``instance`` and ``host`` groups from here (imported by
``cli/main.py``), so those modules stay as they are.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from controller.cli import hosts, instances
from controller.cli.client import ApiClient
from controller.cli.context import (
    DEFAULT_TIMEOUT, MaxResultsOpt, NextTokenOpt, OutputOpt, TimeoutOpt, WaitOpt, client,
    list_page_or_all,
)
from controller.cli.errors import CliError
from controller.cli.output import OutputFormat, col, render_list, render_object
from controller.cli.resources import HOST, INSTANCE, resolve
from controller.cli.waiting import EXIT_TIMEOUT, Progress, wait_for_status, wait_until_final

app = typer.Typer(help="Migrations: instances moving between hosts.", no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("INSTANCE", "instance_id"), col("KIND", "kind"),
           col("FROM", "source_host_id"), col("TO", "target_host_id"), col("STATE", "state"),
           col("SECONDS", "duration_s"), col("MESSAGE", "message")]

HostArg = Annotated[str, typer.Argument(help="Host id or name")]


def wait_for_migration(api: ApiClient, migration: dict, timeout: float) -> dict:
    """Poll a migration until it is final; a failed one exits non-zero."""
    return wait_until_final(api, migration, "/migrations", timeout, noun="migration",
                            title=f"migration {migration['id']} ({migration.get('kind')})",
                            field="state", success="completed", interval=0.3,
                            failed_as="failed")


@instances.app.command("migrate")
def migrate_instance(
    ctx: typer.Context, instance: instances.InstanceArg,
    host: Annotated[str | None, typer.Option(
        "--host", help="Target host id or name (default: the scheduler's choice)")] = None,
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Move an instance to another host: live when Running, cold (disk copy) when Stopped."""
    api = client(ctx)
    body = {"host_id": resolve(api, HOST, host)} if host else {}
    answer = api.post(INSTANCE.item(resolve(api, INSTANCE, instance)) + "/migrate", body)
    render_object(wait_for_migration(api, answer, timeout) if wait else answer, output)


@hosts.app.command("maintenance")
def host_maintenance(
    ctx: typer.Context, host: HostArg,
    on: Annotated[bool, typer.Option("--on/--off", help="Maintenance on (nothing new lands "
                                     "here) or off")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Put a host in maintenance (no new instances or migrations land there), or back."""
    api = client(ctx)
    path = HOST.item(resolve(api, HOST, host)) + f"/maintenance?on={'true' if on else 'false'}"
    render_object(api.post(path, {}), output)


@hosts.app.command("drain")
def host_drain(ctx: typer.Context, host: HostArg, wait: WaitOpt = False,
               timeout: TimeoutOpt = DEFAULT_TIMEOUT,
               output: OutputOpt = OutputFormat.table) -> None:
    """Maintenance on, then move every instance away (Running live, Stopped cold)."""
    api = client(ctx)
    host_id = resolve(api, HOST, host)
    status = api.post(HOST.item(host_id) + "/drain", {})
    if wait:
        deadline = time.monotonic() + timeout
        with Progress(f"drain of {host_id}") as shown:
            while not status.get("done"):
                states = [m["state"] for m in status.get("migrations", [])
                          if m.get("instance_id") in status.get("instances_left", [])]
                shown.update(f"{len(status.get('instances_left', []))} instance(s) left; "
                             f"migrations: {', '.join(states) or 'none'}")
                failed = [m for m in status.get("migrations", [])
                          if m["state"] in ("failed", "cancelled")
                          and m["instance_id"] in status.get("instances_left", [])
                          and not any(n["instance_id"] == m["instance_id"]
                                      and not n["is_final"] for n in status["migrations"])]
                if failed or (status.get("not_moved") and not any(
                        not m["is_final"] for m in status.get("migrations", []))):
                    break
                if time.monotonic() >= deadline:
                    raise CliError(f"gave up after {timeout:.0f}s waiting for the drain of "
                                   f"{host_id}", EXIT_TIMEOUT)
                time.sleep(0.5)
                status = api.get(HOST.item(host_id) + "/drain") | {
                    "not_moved": status.get("not_moved", {})}
            shown.update("done" if status.get("done") else "stopped")
    render_object(status, output)
    if wait and not status.get("done"):
        raise CliError(f"host {host_id} still holds {', '.join(status['instances_left'])}")


@hosts.app.command("evacuate")
def host_evacuate(
    ctx: typer.Context, host: HostArg,
    accept_data_loss: Annotated[bool, typer.Option(
        "--accept-data-loss", help="Required: each instance is rebuilt from its image on "
        "another host; what its disks and snapshots held on this host is lost")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait until every rebuilt instance is Running (Stopped if it was "
        "stopped) and every disk made again is Available")] = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT, output: OutputOpt = OutputFormat.table,
) -> None:
    """Rebuild every instance and detached disk of a DOWN host on other hosts (the host
    is gone for good).

    Only for a host that stopped reporting: a live one is drained instead. The host goes
    into maintenance; if it ever comes back, its agent removes the old copies.
    """
    api = client(ctx)
    host_id = resolve(api, HOST, host)
    query = "?accept_data_loss=true" if accept_data_loss else ""
    answer = api.post(HOST.item(host_id) + "/evacuate" + query, {})
    if wait:
        deadline = time.monotonic() + timeout
        for instance_id in answer.get("evacuated", {}):
            path = INSTANCE.item(instance_id)
            running = api.get(path)["desired_power"] == "running"
            wait_for_status(api, path, label=f"instance {instance_id}",
                            want={"Running" if running else "Stopped"},
                            timeout=max(1.0, deadline - time.monotonic()))
        for disk_id in answer.get("disks_remade", {}):
            wait_for_status(api, f"/disks/{disk_id}", label=f"disk {disk_id}",
                            want={"Available"}, timeout=max(1.0, deadline - time.monotonic()))
    render_object(answer, output)
    if answer.get("not_moved"):
        raise CliError(f"host {host_id} still holds: " + "; ".join(
            f"{i} ({why})" for i, why in sorted(answer["not_moved"].items())))


@app.command("list")
def list_migrations(ctx: typer.Context,
                    instance: Annotated[str | None, typer.Option(help="Only this instance")] = None,
                    host: Annotated[str | None, typer.Option(help="Only from or to this host")] = None,
                    output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
                    next_token: NextTokenOpt = None) -> None:
    """List migrations."""
    api = client(ctx)
    query = {}
    if instance:
        query["instance_id"] = resolve(api, INSTANCE, instance)
    if host:
        query["host_id"] = resolve(api, HOST, host)
    render_list(list_page_or_all(ctx, "/migrations", max_results, next_token, **query),
                COLUMNS, output)


@app.command("show")
def show_migration(ctx: typer.Context,
                   migration: Annotated[str, typer.Argument(help="Migration id")],
                   output: OutputOpt = OutputFormat.table) -> None:
    """Show one migration."""
    render_object(client(ctx).get(f"/migrations/{migration}"), output)


@app.command("cancel")
def cancel_migration(ctx: typer.Context,
                     migration: Annotated[str, typer.Argument(help="Migration id")],
                     wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                     output: OutputOpt = OutputFormat.table) -> None:
    """Cancel a migration that has not switched over: the instance stays on its source host.

    With --wait, exits non-zero unless it ends cancelled (a live copy that switched over
    before the abort ends completed)."""
    api = client(ctx)
    answer = api.post(f"/migrations/{migration}/cancel", {})
    if wait:
        answer = wait_until_final(api, answer, "/migrations", timeout, noun="migration",
                                  title=f"cancel of migration {answer['id']}", field="state",
                                  success="cancelled", interval=0.3)
    render_object(answer, output)
