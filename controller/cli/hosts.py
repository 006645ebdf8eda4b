"""``miniecs host``: enrolled hypervisors (they enrol themselves through their agent)."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import (
    Column, OutputFormat, col, render_list, render_message, render_object,
)
from controller.cli.resources import HOST, resolve

app = typer.Typer(help="Hypervisors: capacity, allocation and health.", no_args_is_help=True)


def _usage(key: str, unit: str = "") -> Column:
    def get(obj: dict) -> str:
        used = (obj.get("allocated") or {}).get(key, "?")
        total = (obj.get("capacity") or {}).get(key, "?")
        return f"{used}/{total}{unit}"
    return Column(key.split("_")[0].upper() + (f" ({unit.strip()})" if unit else ""), get)


COLUMNS = [col("ID", "id"), col("NAME", "name"), col("ZONE", "zone_id"), col("STATE", "state"),
           col("VIRT", "virt_type"), _usage("vcpus"), _usage("memory_mib"), _usage("disk_gib"),
           col("GEN", "generation_applied"), col("HEARTBEAT", "last_heartbeat")]


@app.command("list")
def list_hosts(ctx: typer.Context,
               zone: Annotated[str | None, typer.Option(help="Only hosts of this zone")] = None,
               output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
               next_token: NextTokenOpt = None) -> None:
    """List hosts (vCPU, memory and disk shown as allocated/capacity)."""
    render_list(list_page_or_all(ctx, HOST.path, max_results, next_token, zone_id=zone),
                COLUMNS, output)


@app.command("show")
def show_host(ctx: typer.Context,
              host: Annotated[str, typer.Argument(help="Host id or name")],
              output: OutputOpt = OutputFormat.table) -> None:
    """Show one host."""
    api = client(ctx)
    render_object(api.get(HOST.item(resolve(api, HOST, host))), output)


@app.command("delete")
def delete_host(ctx: typer.Context,
                host: Annotated[str, typer.Argument(help="Host id or name")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Remove a host (refused while it holds instances, disks or snapshots).

    Stop its agent first: an agent that still has the enrolment token enrols again as a
    new, empty host.
    """
    api = client(ctx)
    host_id = resolve(api, HOST, host)
    answer = api.delete(HOST.item(host_id))
    render_message(answer or {"id": host_id, "deleted": True}, output, f"deleted {host_id}")
@app.command("rekey")
def rekey_host(ctx: typer.Context,
               host: Annotated[str, typer.Argument(help="Host id or name")],
               output: OutputOpt = OutputFormat.table) -> None:
    """Give a host a new agent token (shown once); the old token stops working at once.

    Put the token into the agent's config as ``host_token = "..."``: the agent picks it
    up when the controller refuses its old token (or at its next start).
    """
    api = client(ctx)
    host_id = resolve(api, HOST, host)
    render_object(api.post(f"{HOST.item(host_id)}/rekey"), output)
