"""``miniecs sg``: security groups (rules come with their own issue)."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import SECURITY_GROUP, VPC, resolve

app = typer.Typer(help="Security groups: belong to a VPC; instances' NICs are members.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("VPC", "vpc_id"),
           col("MEMBERS", "member_count"), col("CREATED", "created_at")]


@app.command("create")
def create_security_group(ctx: typer.Context,
                          name: Annotated[str, typer.Argument(help="Group name")],
                          vpc: Annotated[str, typer.Option("--vpc", help="VPC id or name")],
                          description: Annotated[str, typer.Option(help="Free text")] = "",
                          output: OutputOpt = OutputFormat.table) -> None:
    """Create a security group."""
    api = client(ctx)
    body = {"name": name, "vpc_id": resolve(api, VPC, vpc), "description": description}
    render_object(api.post(SECURITY_GROUP.path, body), output)


@app.command("list")
def list_security_groups(ctx: typer.Context,
                         vpc: Annotated[str | None, typer.Option(
                             help="Only this VPC's (id or name)")] = None,
                         output: OutputOpt = OutputFormat.table,
                         max_results: MaxResultsOpt = None,
                         next_token: NextTokenOpt = None) -> None:
    """List security groups."""
    vpc_id = resolve(client(ctx), VPC, vpc) if vpc else None
    render_list(list_page_or_all(ctx, SECURITY_GROUP.path, max_results, next_token,
                                 vpc_id=vpc_id), COLUMNS, output)


@app.command("show")
def show_security_group(ctx: typer.Context,
                        group: Annotated[str, typer.Argument(help="Group id or name")],
                        output: OutputOpt = OutputFormat.table) -> None:
    """Show one security group."""
    api = client(ctx)
    render_object(api.get(SECURITY_GROUP.item(resolve(api, SECURITY_GROUP, group))), output)


@app.command("delete")
def delete_security_group(ctx: typer.Context,
                          group: Annotated[str, typer.Argument(help="Group id or name")],
                          output: OutputOpt = OutputFormat.table) -> None:
    """Delete a security group (refused while it has members)."""
    api = client(ctx)
    group_id = resolve(api, SECURITY_GROUP, group)
    answer = api.delete(SECURITY_GROUP.item(group_id))
    render_message(answer or {"id": group_id, "deleted": True}, output, f"deleted {group_id}")
