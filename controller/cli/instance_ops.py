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


@app.command("replace-system-disk")
def replace_system_disk(
    ctx: typer.Context, instance: InstanceArg,
    image: Annotated[str, typer.Option("--image", help="Image id or name of the new disk")],
    disk_size: Annotated[int | None, typer.Option(
        "--disk-size", min=1, help="GiB (default: the old size or the image's minimum)")] = None,
    keypair: Annotated[str | None, typer.Option(
        "--keypair", help="Authorise this key pair instead of the instance's")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Give a Stopped instance a new system disk (new disk id) from an image.

    The old system disk is released; the NIC (MAC, IP) and groups stay.
    """
    api = client(ctx)
    iid = resolve(api, INSTANCE, instance)
    body: dict = {"image_id": resolve(api, IMAGE, image)}
    if disk_size is not None:
        body["system_disk_size_gib"] = disk_size
    if keypair is not None:
        body["key_pair_id"] = resolve(api, KEY_PAIR, keypair)
    render_object(api.post(INSTANCE.item(iid) + "/replace-system-disk", body), output)


@app.command("reinit-disk")
def reinit_disk(ctx: typer.Context, instance: InstanceArg, wait: WaitOpt = False,
                timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                output: OutputOpt = OutputFormat.table) -> None:
    """Put a Stopped instance's system disk back to its image (everything written is lost)."""
    api = client(ctx)
    iid = resolve(api, INSTANCE, instance)
    op = api.post(INSTANCE.item(iid) + "/reinit-system-disk", {})
    if wait:
        op = wait_for_operation(api, op, "/disk-operations", timeout)
    render_object(op, output)
