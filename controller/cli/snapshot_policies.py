"""``miniecs snapshot-policy``: automatic snapshots at hours of the day on weekdays."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.disks import DISK
from controller.cli.errors import CliError
from controller.cli.output import Column, OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import Resource, resolve

POLICY = Resource("snapshot_policy", "snapshot policy", "/snapshot-policies", "sp-")

app = typer.Typer(help="Automatic snapshot policies: hours (UTC), weekdays, retention.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"),
           Column("HOURS", lambda o: ",".join(map(str, o["hours"]))),
           Column("WEEKDAYS", lambda o: ",".join(map(str, o["weekdays"]))),
           Column("RETENTION DAYS", lambda o: o.get("retention_days") or "forever"),
           Column("DISKS", lambda o: len(o.get("disk_ids") or []))]
PolicyArg = Annotated[str, typer.Argument(help="Policy id or name")]
DisksArg = Annotated[list[str], typer.Argument(help="Disk ids or names")]


def _numbers(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"{what}: comma-separated numbers, e.g. 2,14") from None


@app.command("create")
def create_policy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Policy name (unique)")],
    hours: Annotated[str, typer.Option(help="Hours of the day, UTC, e.g. 2,14")],
    weekdays: Annotated[str, typer.Option(help="Days 1-7 (Monday=1), e.g. 1,2,3,4,5")]
    = "1,2,3,4,5,6,7",
    retention_days: Annotated[int | None, typer.Option(
        "--retention-days", min=1, help="Delete its snapshots after this many days "
        "(default: keep forever)")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create a snapshot policy."""
    body = {"name": name, "hours": _numbers(hours, "--hours"),
            "weekdays": _numbers(weekdays, "--weekdays"), "retention_days": retention_days}
    render_object(client(ctx).post(POLICY.path, body), output)


@app.command("apply")
def apply_policy(ctx: typer.Context, policy: PolicyArg, disks: DisksArg,
                 output: OutputOpt = OutputFormat.table) -> None:
    """Apply a policy to disks (a disk has at most one policy)."""
    api = client(ctx)
    pid = resolve(api, POLICY, policy)
    render_object(api.post(f"{POLICY.item(pid)}/apply",
                           {"disk_ids": [resolve(api, DISK, d) for d in disks]}), output)


@app.command("cancel")
def cancel_policy(ctx: typer.Context, policy: PolicyArg, disks: DisksArg,
                  output: OutputOpt = OutputFormat.table) -> None:
    """Stop applying a policy to disks (their snapshots stay)."""
    api = client(ctx)
    pid = resolve(api, POLICY, policy)
    render_object(api.post(f"{POLICY.item(pid)}/cancel",
                           {"disk_ids": [resolve(api, DISK, d) for d in disks]}), output)


@app.command("list")
def list_policies(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
                  max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List snapshot policies."""
    render_list(list_page_or_all(ctx, POLICY.path, max_results, next_token), COLUMNS, output)


@app.command("delete")
def delete_policy(ctx: typer.Context, policy: PolicyArg,
                  output: OutputOpt = OutputFormat.table) -> None:
    """Delete a policy (the snapshots it took stay until they expire)."""
    api = client(ctx)
    pid = resolve(api, POLICY, policy)
    answer = api.delete(POLICY.item(pid))
    render_message(answer or {"id": pid, "deleted": True}, output, f"deleted {pid}")
