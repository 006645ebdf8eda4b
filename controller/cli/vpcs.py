"""``miniecs vpc``: private networks."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import VPC, resolve

app = typer.Typer(help="VPCs: private IPv4 networks (CIDRs of different VPCs may overlap).",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("CIDR", "cidr_block"), col("VNI", "vni"),
           col("CREATED", "created_at")]


@app.command("create")
def create_vpc(ctx: typer.Context,
               name: Annotated[str, typer.Argument(help="VPC name")],
               cidr: Annotated[str, typer.Option("--cidr", help="IPv4 block, /8 to /28, "
                                                 "e.g. 10.0.0.0/16")],
               description: Annotated[str, typer.Option(help="Free text")] = "",
               output: OutputOpt = OutputFormat.table) -> None:
    """Create a VPC."""
    body = {"name": name, "cidr_block": cidr, "description": description}
    render_object(client(ctx).post(VPC.path, body), output)


@app.command("list")
def list_vpcs(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
              max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List VPCs."""
    render_list(list_page_or_all(ctx, VPC.path, max_results, next_token), COLUMNS, output)


@app.command("show")
def show_vpc(ctx: typer.Context, vpc: Annotated[str, typer.Argument(help="VPC id or name")],
             output: OutputOpt = OutputFormat.table) -> None:
    """Show one VPC."""
    api = client(ctx)
    render_object(api.get(VPC.item(resolve(api, VPC, vpc))), output)


@app.command("delete")
def delete_vpc(ctx: typer.Context, vpc: Annotated[str, typer.Argument(help="VPC id or name")],
               output: OutputOpt = OutputFormat.table) -> None:
    """Delete a VPC (refused while it has vSwitches or security groups)."""
    api = client(ctx)
    vpc_id = resolve(api, VPC, vpc)
    answer = api.delete(VPC.item(vpc_id))
    render_message(answer or {"id": vpc_id, "deleted": True}, output, f"deleted {vpc_id}")
