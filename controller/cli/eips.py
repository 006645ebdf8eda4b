"""``miniecs eip``: elastic IPs from the region's pool, mapped 1:1 onto instances."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import EIP, INSTANCE, resolve

app = typer.Typer(help="Elastic IPs: public addresses mapped 1:1 onto instances.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("IP", "ip_address"), col("STATUS", "status"),
           col("INSTANCE", "instance_id"), col("PRIVATE IP", "private_ip_address")]


@app.command("allocate")
def allocate_eip(ctx: typer.Context,
                 name: Annotated[str, typer.Option(help="Free-form name")] = "",
                 ip: Annotated[str | None, typer.Option("--ip", help="A specific address of "
                                                        "the pool")] = None,
                 output: OutputOpt = OutputFormat.table) -> None:
    """Allocate an EIP from the region's pool."""
    body: dict = {"name": name}
    if ip:
        body["ip_address"] = ip
    render_object(client(ctx).post(EIP.path, body), output)


@app.command("list")
def list_eips(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
              max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List EIPs."""
    render_list(list_page_or_all(ctx, EIP.path, max_results, next_token), COLUMNS, output)


@app.command("show")
def show_eip(ctx: typer.Context, eip: Annotated[str, typer.Argument(help="EIP id or name")],
             output: OutputOpt = OutputFormat.table) -> None:
    """Show one EIP."""
    api = client(ctx)
    render_object(api.get(EIP.item(resolve(api, EIP, eip))), output)


@app.command("associate")
def associate_eip(ctx: typer.Context,
                  eip: Annotated[str, typer.Argument(help="EIP id or name")],
                  instance: Annotated[str, typer.Option("--instance", help="Instance id or "
                                                        "name")],
                  output: OutputOpt = OutputFormat.table) -> None:
    """Map the EIP onto an instance's private IP."""
    api = client(ctx)
    body = {"instance_id": resolve(api, INSTANCE, instance)}
    render_object(api.post(EIP.item(resolve(api, EIP, eip)) + "/associate", body), output)


@app.command("disassociate")
def disassociate_eip(ctx: typer.Context,
                     eip: Annotated[str, typer.Argument(help="EIP id or name")],
                     output: OutputOpt = OutputFormat.table) -> None:
    """Remove the EIP's mapping."""
    api = client(ctx)
    render_object(api.post(EIP.item(resolve(api, EIP, eip)) + "/disassociate"), output)


@app.command("release")
def release_eip(ctx: typer.Context, eip: Annotated[str, typer.Argument(help="EIP id or name")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Release an EIP back to the pool (refused while associated)."""
    api = client(ctx)
    eip_id = resolve(api, EIP, eip)
    answer = api.delete(EIP.item(eip_id))
    render_message(answer or {"id": eip_id, "released": True}, output, f"released {eip_id}")
