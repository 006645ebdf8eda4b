"""``miniecs vswitch``: subnets of a VPC, one zone each."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import VPC, VSWITCH, resolve

app = typer.Typer(help="vSwitches: a subnet of a VPC in one zone.", no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("VPC", "vpc_id"), col("ZONE", "zone_id"),
           col("CIDR", "cidr_block"), col("GATEWAY", "gateway_ip"),
           col("FREE IPS", "available_ip_count"), col("NAT", "nat_enabled")]


@app.command("create")
def create_vswitch(ctx: typer.Context,
                   name: Annotated[str, typer.Argument(help="vSwitch name")],
                   vpc: Annotated[str, typer.Option("--vpc", help="VPC id or name")],
                   zone: Annotated[str, typer.Option("--zone", help="Zone id")],
                   cidr: Annotated[str, typer.Option("--cidr", help="IPv4 block inside the "
                                                     "VPC's, /16 to /29")],
                   description: Annotated[str, typer.Option(help="Free text")] = "",
                   nat: Annotated[bool, typer.Option("--nat/--no-nat", help="Outbound internet "
                                                     "access (SNAT) for its instances")] = False,
                   output: OutputOpt = OutputFormat.table) -> None:
    """Create a vSwitch."""
    api = client(ctx)
    body = {"name": name, "vpc_id": resolve(api, VPC, vpc), "zone_id": zone, "cidr_block": cidr,
            "description": description, "nat_enabled": nat}
    render_object(api.post(VSWITCH.path, body), output)


@app.command("list")
def list_vswitches(ctx: typer.Context,
                   vpc: Annotated[str | None, typer.Option(help="Only this VPC's (id or name)")]
                   = None,
                   zone: Annotated[str | None, typer.Option(help="Only this zone's")] = None,
                   output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
                   next_token: NextTokenOpt = None) -> None:
    """List vSwitches."""
    vpc_id = resolve(client(ctx), VPC, vpc) if vpc else None
    render_list(list_page_or_all(ctx, VSWITCH.path, max_results, next_token, vpc_id=vpc_id,
                                 zone_id=zone), COLUMNS, output)


@app.command("show")
def show_vswitch(ctx: typer.Context,
                 vswitch: Annotated[str, typer.Argument(help="vSwitch id or name")],
                 output: OutputOpt = OutputFormat.table) -> None:
    """Show one vSwitch."""
    api = client(ctx)
    render_object(api.get(VSWITCH.item(resolve(api, VSWITCH, vswitch))), output)


@app.command("update")
def update_vswitch(ctx: typer.Context,
                   vswitch: Annotated[str, typer.Argument(help="vSwitch id or name")],
                   nat: Annotated[bool | None, typer.Option("--nat/--no-nat", help="Turn "
                                                            "outbound NAT on or off")] = None,
                   output: OutputOpt = OutputFormat.table) -> None:
    """Change a vSwitch: outbound NAT."""
    api = client(ctx)
    render_object(api.patch(VSWITCH.item(resolve(api, VSWITCH, vswitch)), {"nat_enabled": nat}),
                  output)


@app.command("delete")
def delete_vswitch(ctx: typer.Context,
                   vswitch: Annotated[str, typer.Argument(help="vSwitch id or name")],
                   output: OutputOpt = OutputFormat.table) -> None:
    """Delete a vSwitch (refused while instances use it)."""
    api = client(ctx)
    vswitch_id = resolve(api, VSWITCH, vswitch)
    answer = api.delete(VSWITCH.item(vswitch_id))
    render_message(answer or {"id": vswitch_id, "deleted": True}, output,
                   f"deleted {vswitch_id}")
