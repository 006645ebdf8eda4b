"""``miniecs deployment-set``: groups of instances kept on different hosts."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import (
    Column, OutputFormat, col, render_list, render_message, render_object,
)
from controller.cli.resources import DEPLOYMENT_SET, resolve

app = typer.Typer(help="Deployment sets: strategy Availability keeps at most one member per "
                  "host.", no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("STRATEGY", "strategy"),
           Column("INSTANCES", lambda o: len(o.get("instance_ids") or [])),
           col("CREATED", "created_at")]
SetArg = Annotated[str, typer.Argument(help="Deployment set id or name")]


@app.command("create")
def create_set(ctx: typer.Context,
               name: Annotated[str, typer.Argument(help="Deployment set name")],
               strategy: Annotated[str, typer.Option(
                   help="Availability: at most one member per host")] = "Availability",
               description: Annotated[str, typer.Option(help="Free text")] = "",
               output: OutputOpt = OutputFormat.table) -> None:
    """Create a deployment set; add instances with `instance create --deployment-set`."""
    body = {"name": name, "strategy": strategy, "description": description}
    render_object(client(ctx).post(DEPLOYMENT_SET.path, body), output)


@app.command("list")
def list_sets(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
              max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List deployment sets."""
    render_list(list_page_or_all(ctx, DEPLOYMENT_SET.path, max_results, next_token), COLUMNS,
                output)


@app.command("show")
def show_set(ctx: typer.Context, deployment_set: SetArg,
             output: OutputOpt = OutputFormat.table) -> None:
    """Show a deployment set, its members and their hosts."""
    api = client(ctx)
    render_object(api.get(DEPLOYMENT_SET.item(resolve(api, DEPLOYMENT_SET, deployment_set))),
                  output)


@app.command("delete")
def delete_set(ctx: typer.Context, deployment_set: SetArg,
               output: OutputOpt = OutputFormat.table) -> None:
    """Delete a deployment set (refused while it has instances)."""
    api = client(ctx)
    set_id = resolve(api, DEPLOYMENT_SET, deployment_set)
    answer = api.delete(DEPLOYMENT_SET.item(set_id))
    render_message(answer or {"id": set_id, "deleted": True}, output, f"deleted {set_id}")
