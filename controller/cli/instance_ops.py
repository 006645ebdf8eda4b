"""``miniecs instance`` commands for work after launch: change-type, replace-system-disk,
reinit-disk and modify (registered on the ``instance`` group)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controller.cli.context import DEFAULT_TIMEOUT, OutputOpt, TimeoutOpt, WaitOpt, client
from controller.cli.errors import CliError
from controller.cli.instances import InstanceArg, app
from controller.cli.output import OutputFormat, render_object
from controller.cli.resources import IMAGE, INSTANCE, KEY_PAIR, SECURITY_GROUP, resolve
from controller.cli.waiting import wait_for_operation


@app.command("change-type")
def change_type(ctx: typer.Context, instance: InstanceArg,
                instance_type: Annotated[str, typer.Option(
                    "--type", help="New instance type, e.g. ecs.t1.medium")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Change the type (vCPUs, memory) of a Stopped instance; its host must have room.

    The guest sees the new size at its next start.
    """
    api = client(ctx)
    iid = resolve(api, INSTANCE, instance)
    render_object(api.post(INSTANCE.item(iid) + "/change-type",
                           {"instance_type": instance_type}), output)
