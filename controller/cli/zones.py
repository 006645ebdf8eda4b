"""``miniecs zone``: the region's zones."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list, render_object
from controller.cli.resources import ZONE

app = typer.Typer(help="Zones: failure domains of the region; hosts and vSwitches live in one.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("DESCRIPTION", "description"), col("CREATED", "created_at")]


@app.command("list")
def list_zones(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
               max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List zones."""
    render_list(list_page_or_all(ctx, ZONE.path, max_results, next_token), COLUMNS, output)


@app.command("create")
def create_zone(ctx: typer.Context,
                name: Annotated[str, typer.Argument(help="Zone name, also its id: zone-a")],
                description: Annotated[str, typer.Option(help="Free text")] = "",
                output: OutputOpt = OutputFormat.table) -> None:
    """Create a zone."""
    render_object(client(ctx).post(ZONE.path, {"name": name, "description": description}),
                  output)
