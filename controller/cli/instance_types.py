"""``miniecs instance-type``: named vCPU/memory shapes."""

from __future__ import annotations

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list
from controller.cli.resources import INSTANCE_TYPE

app = typer.Typer(help="Instance types (ecs.t1.small...): vCPUs and memory.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("VCPUS", "vcpus"), col("MEMORY_MIB", "memory_mib"),
           col("DESCRIPTION", "description")]


@app.command("list")
def list_instance_types(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
                        max_results: MaxResultsOpt = None,
                        next_token: NextTokenOpt = None) -> None:
    """List instance types."""
    render_list(list_page_or_all(ctx, INSTANCE_TYPE.path, max_results, next_token),
                COLUMNS, output)
