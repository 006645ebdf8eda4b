"""``miniecs status``: the drift view — what is not yet as asked, at a glance."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import OutputOpt, client
from controller.cli.output import OutputFormat, col, print_json, render_list, show
from rich.text import Text

COLUMNS = [col("TYPE", "resource_type"), col("ID", "resource_id"), col("NAME", "name"),
           col("HOST", "host_id"), col("STATUS", "status"), col("DESIRED", "desired"),
           col("OBSERVED", "observed"), col("LAST CONVERGED", "last_converged_at"),
           col("ERROR", "error")]


def status_command(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Every host and instance, converged or "
                                       "not")] = False,
    host: Annotated[str | None, typer.Option(help="Only this host id")] = None,
    resource_type: Annotated[str | None, typer.Option("--type", help="Only this type (host, "
                                                      "instance, disk, snapshot, operation, "
                                                      "storage_operation, image)")] = None,
    exit_code: Annotated[bool, typer.Option("--exit-code", help="Exit 1 while anything is "
                                            "not yet as asked (for scripts)")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Desired versus observed state per resource; by default only what is not yet as asked."""
    view = client(ctx).get("/status", all=all_, host_id=host, resource_type=resource_type,
                           max_results=5000)
    s = view["summary"]
    if output is OutputFormat.json:
        print_json(view)
    else:
        show(Text(f"hosts {s['hosts_converged']}/{s['hosts']} converged, instances "
                  f"{s['instances_converged']}/{s['instances']} converged, "
                  f"{s['drifted']} resource(s) not yet as asked"
                  + (" (list truncated)" if view["truncated"] else "")))
        render_list({"items": view["items"], "next_token": None}, COLUMNS, output)
    if exit_code and s["drifted"]:
        raise typer.Exit(1)
