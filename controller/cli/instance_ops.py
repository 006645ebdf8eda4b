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


@app.command("modify")
def modify(
    ctx: typer.Context, instance: InstanceArg,
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    description: Annotated[str | None, typer.Option(help="Free text")] = None,
    hostname: Annotated[str | None, typer.Option(
        help="Guest host name (the guest takes it at its next boot)")] = None,
    user_data_file: Annotated[Path | None, typer.Option(
        "--user-data-file", exists=True, dir_okay=False, readable=True,
        help="New user data (instance must be Stopped)")] = None,
    deletion_protection: Annotated[bool | None, typer.Option(
        "--deletion-protection/--no-deletion-protection",
        help="Refuse deletes while on")] = None,
    security_groups: Annotated[list[str] | None, typer.Option(
        "--sg", help="Replace the primary NIC's groups: repeat for each (1-5, same VPC)")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Modify attributes; only the options given change (all or nothing)."""
    api = client(ctx)
    iid = resolve(api, INSTANCE, instance)
    body: dict = {k: v for k, v in (("name", name), ("description", description),
                                    ("hostname", hostname),
                                    ("deletion_protection", deletion_protection))
                  if v is not None}
    if security_groups:
        body["security_group_ids"] = [resolve(api, SECURITY_GROUP, g) for g in security_groups]
    if user_data_file is not None:
        try:
            body["user_data"] = user_data_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {user_data_file} as UTF-8 text: {exc}") from None
    if not body:
        raise CliError("nothing to modify: give at least one option (see --help)", 2)
    render_object(api.patch(INSTANCE.item(iid), body), output)
