"""``miniecs image``: import, list, show, delete images."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from controller.cli.context import (
    DEFAULT_TIMEOUT, MaxResultsOpt, NextTokenOpt, OutputOpt, TimeoutOpt, WaitOpt, client,
    list_page_or_all,
)
from controller.cli.errors import CliError
from controller.cli.output import (
    Column, OutputFormat, col, render_list, render_message, render_object,
)
from controller.cli.resources import IMAGE, INSTANCE, resolve
from controller.cli.waiting import wait_for_status

app = typer.Typer(help="Images: qcow2 or raw disks instances boot from.", no_args_is_help=True)


def human_bytes(value: int | None) -> str | None:
    if value is None:
        return None
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


COLUMNS = [col("ID", "id"), col("NAME", "name"), col("STATUS", "status"), col("FORMAT", "format"),
           Column("VIRTUAL SIZE", lambda o: human_bytes(o.get("virtual_size_bytes"))),
           col("MIN DISK GIB", "min_disk_gib"), col("CREATED", "created_at")]


@app.command("import")
def import_image(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Image name (unique)")],
    file: Annotated[str | None, typer.Option(
        "--file", help="A file on the controller's host (a relative path is made absolute "
        "against the current directory)")] = None,
    url: Annotated[str | None, typer.Option("--url", help="An http(s) URL the controller "
                                            "downloads")] = None,
    image_format: Annotated[str, typer.Option(
        "--format", help="qcow2 or raw: the source is inspected as exactly this")] = "qcow2",
    min_disk: Annotated[int | None, typer.Option(
        "--min-disk", min=1, help="Smallest system disk in GiB (default: the virtual size)")]
    = None,
    description: Annotated[str, typer.Option(help="Free text")] = "",
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Import an image from a file on the controller host or an http(s) URL."""
    if (file is None) == (url is None):
        raise CliError("give exactly one of --file and --url")
    body: dict = {"name": name, "format": image_format, "description": description}
    if file is not None:
        body["source_path"] = os.path.abspath(os.path.expanduser(file))
    else:
        body["source_url"] = url
    if min_disk is not None:
        body["min_disk_gib"] = min_disk
    api = client(ctx)
    image = api.post(IMAGE.path, body)
    if wait and image.get("status") != "Available":
        image = wait_for_status(api, IMAGE.item(image["id"]), label=f"image {image['id']}",
                                want={"Available"}, timeout=timeout, describe=import_progress)
    render_object(image, output)


def import_progress(image: dict) -> str:
    """``Creating 12.0 MiB of 40.0 MiB (30%)`` while the controller copies the source."""
    status, done, total = image.get("status", "?"), image.get("progress_bytes"), \
        image.get("source_size_bytes")
    if status != "Creating" or done is None:
        return status
    if total:
        return f"{status} {human_bytes(done)} of {human_bytes(total)} ({100 * done // total}%)"
    return f"{status} {human_bytes(done)}"



@app.command("create")
def create_image(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Image name (unique)")],
    snapshot: Annotated[str | None, typer.Option(
        "--snapshot", help="An accomplished snapshot (id) to make the image from")] = None,
    instance: Annotated[str | None, typer.Option(
        "--instance", help="An instance (id or name) whose system disk becomes the image "
        "(a snapshot of it is taken and kept)")] = None,
    min_disk: Annotated[int | None, typer.Option(
        "--min-disk", min=1, help="Smallest system disk in GiB (default: the disk's size)")]
    = None,
    description: Annotated[str, typer.Option(help="Free text")] = "",
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Make an image from a snapshot or from an instance's system disk."""
    if (snapshot is None) == (instance is None):
        raise CliError("give exactly one of --snapshot and --instance")
    api = client(ctx)
    body: dict = {"name": name, "description": description}
    if snapshot is not None:
        body["snapshot_id"] = snapshot
    else:
        body["instance_id"] = resolve(api, INSTANCE, instance)
    if min_disk is not None:
        body["min_disk_gib"] = min_disk
    image = api.post(IMAGE.path, body)
    if wait and image.get("status") != "Available":
        image = wait_for_status(api, IMAGE.item(image["id"]), label=f"image {image['id']}",
                                want={"Available"}, timeout=timeout)
    render_object(image, output)


@app.command("list")
def list_images(ctx: typer.Context,
                status: Annotated[str | None, typer.Option(
                    help="Only this status: Creating, Available or Error")] = None,
                output: OutputOpt = OutputFormat.table,
                max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List images."""
    render_list(list_page_or_all(ctx, IMAGE.path, max_results, next_token, status=status),
                COLUMNS, output)


@app.command("show")
def show_image(ctx: typer.Context,
               image: Annotated[str, typer.Argument(help="Image id or name")],
               output: OutputOpt = OutputFormat.table) -> None:
    """Show one image."""
    api = client(ctx)
    render_object(api.get(IMAGE.item(resolve(api, IMAGE, image))), output)


@app.command("delete")
def delete_image(ctx: typer.Context,
                 image: Annotated[str, typer.Argument(help="Image id or name")],
                 output: OutputOpt = OutputFormat.table) -> None:
    """Delete an image (refused while instances use it)."""
    api = client(ctx)
    image_id = resolve(api, IMAGE, image)
    answer = api.delete(IMAGE.item(image_id))
    render_message(answer or {"id": image_id, "deleted": True}, output, f"deleted {image_id}")
