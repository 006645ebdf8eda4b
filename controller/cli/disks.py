"""``miniecs disk`` and ``miniecs snapshot``: cloud disks and their snapshots."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import (
    DEFAULT_TIMEOUT, MaxResultsOpt, NextTokenOpt, OutputOpt, TimeoutOpt, WaitOpt, client,
    list_page_or_all,
)
from controller.cli.output import Column, OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import INSTANCE, Resource, resolve
from controller.cli.waiting import wait_for_operation, wait_for_status

DISK = Resource("disk", "disk", "/disks", "d-")
SNAPSHOT = Resource("snapshot", "snapshot", "/snapshots", "s-")

disk_app = typer.Typer(help="Cloud disks: data disks, attach/detach, resize, rollback.",
                       no_args_is_help=True)
snapshot_app = typer.Typer(help="Snapshots of disks: point in time, outlive their disk.",
                           no_args_is_help=True)

DISK_COLUMNS = [col("ID", "id"), col("NAME", "name"), col("ROLE", "role"),
                col("SIZE GIB", "size_gib"), col("STATUS", "status"),
                col("INSTANCE", "instance_id"), col("DEVICE", "device"),
                col("CHAIN", "chain_depth"), col("SNAPSHOTS", "snapshot_count"),
                Column("REASON", lambda o: o.get("status_reason") or None)]
SNAPSHOT_COLUMNS = [col("ID", "id"), col("NAME", "name"), col("DISK", "disk_id"),
                    col("ROLE", "disk_role"), col("SIZE GIB", "disk_size_gib"),
                    col("STATUS", "status"), col("EXPIRES", "expires_at"),
                    col("CREATED", "created_at")]
DiskArg = Annotated[str, typer.Argument(help="Disk id or name")]
SnapshotArg = Annotated[str, typer.Argument(help="Snapshot id or name")]


def _settle(ctx: typer.Context, resource: Resource, obj: dict, want: set[str],
            timeout: float) -> dict:
    if obj.get("status") in want:
        return obj
    return wait_for_status(client(ctx), resource.item(obj["id"]),
                           label=f"{resource.label} {obj['id']}", want=want, timeout=timeout)


def _wait_operation(ctx: typer.Context, operation: dict, timeout: float) -> dict:
    return wait_for_operation(client(ctx), operation, "/disk-operations", timeout)


@disk_app.command("create")
def create_disk(
    ctx: typer.Context,
    size: Annotated[int | None, typer.Option("--size", min=1, help="Size in GiB (default: the "
                                             "snapshot's)")] = None,
    name: Annotated[str, typer.Option(help="Disk name")] = "",
    instance: Annotated[str | None, typer.Option("--instance", help="Create on this instance's "
                                                 "host and attach it (id or name)")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Fill from this snapshot")]
    = None,
    zone: Annotated[str | None, typer.Option("--zone", help="Zone")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Host id (admin only)")] = None,
    delete_with_instance: Annotated[bool, typer.Option(
        "--delete-with-instance", help="Delete it with the instance it is attached to")] = False,
    description: Annotated[str, typer.Option(help="Free text")] = "",
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create a data disk (empty or from a snapshot), optionally attached at once."""
    api = client(ctx)
    body: dict = {"name": name, "description": description,
                  "delete_with_instance": delete_with_instance}
    optional = {"size_gib": size, "zone_id": zone, "host_id": host,
                "instance_id": resolve(api, INSTANCE, instance) if instance else None,
                "snapshot_id": resolve(api, SNAPSHOT, snapshot) if snapshot else None}
    body.update({k: v for k, v in optional.items() if v is not None})
    disk = api.post(DISK.path, body)
    if wait:
        disk = _settle(ctx, DISK, disk, {"In_use" if instance else "Available"}, timeout)
    render_object(disk, output)


@disk_app.command("list")
def list_disks(ctx: typer.Context,
               instance: Annotated[str | None, typer.Option(help="Only this instance's")] = None,
               status: Annotated[str | None, typer.Option(help="Only this status")] = None,
               output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
               next_token: NextTokenOpt = None) -> None:
    """List disks (system and data)."""
    api = client(ctx)
    filters = {"status": status,
               "instance_id": resolve(api, INSTANCE, instance) if instance else None}
    render_list(list_page_or_all(ctx, DISK.path, max_results, next_token, **filters),
                DISK_COLUMNS, output)


@disk_app.command("show")
def show_disk(ctx: typer.Context, disk: DiskArg, output: OutputOpt = OutputFormat.table) -> None:
    """Show one disk (with its backing chain depth)."""
    api = client(ctx)
    render_object(api.get(DISK.item(resolve(api, DISK, disk))), output)


@disk_app.command("attach")
def attach_disk(ctx: typer.Context, disk: DiskArg,
                instance: Annotated[str, typer.Option("--instance", help="Instance id or name")],
                wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                output: OutputOpt = OutputFormat.table) -> None:
    """Attach to an instance on the same host (hot-plug when Running)."""
    api = client(ctx)
    answer = api.post(DISK.item(resolve(api, DISK, disk)) + "/attach",
                      {"instance_id": resolve(api, INSTANCE, instance)})
    render_object(_settle(ctx, DISK, answer, {"In_use"}, timeout) if wait else answer, output)


@disk_app.command("detach")
def detach_disk(ctx: typer.Context, disk: DiskArg, wait: WaitOpt = False,
                timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                output: OutputOpt = OutputFormat.table) -> None:
    """Detach from its instance (hot-unplug when Running)."""
    api = client(ctx)
    answer = api.post(DISK.item(resolve(api, DISK, disk)) + "/detach", {})
    render_object(_settle(ctx, DISK, answer, {"Available"}, timeout) if wait else answer, output)


@disk_app.command("resize")
def resize_disk(ctx: typer.Context, disk: DiskArg,
                size: Annotated[int, typer.Option("--size", min=1, help="New size in GiB")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Grow a disk (online when its instance runs); shrinking is refused."""
    api = client(ctx)
    render_object(api.post(DISK.item(resolve(api, DISK, disk)) + "/resize", {"size_gib": size}),
                  output)


@disk_app.command("reset")
def reset_disk(ctx: typer.Context, disk: DiskArg,
               snapshot: Annotated[str, typer.Option("--snapshot", help="Snapshot of this disk")],
               wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
               output: OutputOpt = OutputFormat.table) -> None:
    """Roll a disk back to one of its snapshots (its instance must be Stopped)."""
    api = client(ctx)
    op = api.post(DISK.item(resolve(api, DISK, disk)) + "/reset",
                  {"snapshot_id": resolve(api, SNAPSHOT, snapshot)})
    render_object(_wait_operation(ctx, op, timeout) if wait else op, output)


@disk_app.command("delete")
def delete_disk(ctx: typer.Context, disk: DiskArg, output: OutputOpt = OutputFormat.table) -> None:
    """Delete a detached data disk (its snapshots stay)."""
    api = client(ctx)
    disk_id = resolve(api, DISK, disk)
    render_message(api.delete(DISK.item(disk_id)) or {}, output, f"disk {disk_id} deleted")


@snapshot_app.command("create")
def create_snapshot(ctx: typer.Context, disk: DiskArg,
                    name: Annotated[str, typer.Option(help="Snapshot name")] = "",
                    retention_days: Annotated[int | None, typer.Option(
                        "--retention-days", min=1, help="Delete after this many days")] = None,
                    description: Annotated[str, typer.Option(help="Free text")] = "",
                    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                    output: OutputOpt = OutputFormat.table) -> None:
    """Snapshot a disk (crash-consistent; the instance may be running)."""
    api = client(ctx)
    body: dict = {"disk_id": resolve(api, DISK, disk), "name": name, "description": description}
    if retention_days is not None:
        body["retention_days"] = retention_days
    snap = api.post(SNAPSHOT.path, body)
    render_object(_settle(ctx, SNAPSHOT, snap, {"accomplished"}, timeout) if wait else snap,
                  output)


@snapshot_app.command("list")
def list_snapshots(ctx: typer.Context,
                   disk: Annotated[str | None, typer.Option(help="Only this disk's")] = None,
                   output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
                   next_token: NextTokenOpt = None) -> None:
    """List snapshots."""
    api = client(ctx)
    render_list(list_page_or_all(ctx, SNAPSHOT.path, max_results, next_token,
                                 disk_id=resolve(api, DISK, disk) if disk else None),
                SNAPSHOT_COLUMNS, output)


@snapshot_app.command("show")
def show_snapshot(ctx: typer.Context, snapshot: SnapshotArg,
                  output: OutputOpt = OutputFormat.table) -> None:
    """Show one snapshot."""
    api = client(ctx)
    render_object(api.get(SNAPSHOT.item(resolve(api, SNAPSHOT, snapshot))), output)


@snapshot_app.command("delete")
def delete_snapshot(ctx: typer.Context, snapshot: SnapshotArg,
                    output: OutputOpt = OutputFormat.table) -> None:
    """Delete a snapshot (any order; the disk and other snapshots are untouched)."""
    api = client(ctx)
    snapshot_id = resolve(api, SNAPSHOT, snapshot)
    render_message(api.delete(SNAPSHOT.item(snapshot_id)) or {}, output,
                   f"snapshot {snapshot_id} deleted")
