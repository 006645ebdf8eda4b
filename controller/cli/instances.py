"""``miniecs instance``: create, inspect, power and delete instances."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.client import EXIT_UNREACHABLE, ApiError
from controller.cli.context import (
    DEFAULT_TIMEOUT, MaxResultsOpt, NextTokenOpt, OutputOpt, TimeoutOpt, WaitOpt, client,
    list_page_or_all,
)
from controller.cli.errors import CliError
from controller.cli.output import (
    Column, OutputFormat, col, note, print_json, render_list, render_message, render_object,
)
from controller.cli.placement import render_explanation
from controller.cli.resources import (
    DEPLOYMENT_SET, HOST, IMAGE, INSTANCE, KEY_PAIR, SECURITY_GROUP, VPC, VSWITCH, resolve,
)
from controller.cli.waiting import wait_for_operation, wait_for_status

app = typer.Typer(help="Instances: virtual machines on the region's hypervisors.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("STATUS", "status"),
           col("TYPE", "instance_type"), col("PRIVATE IP", "private_ip_address"),
           col("VSWITCH", "vswitch_id"), col("HOST", "host_id"),
           Column("REASON", lambda o: o.get("status_reason") or None)]

ForceOpt = Annotated[bool, typer.Option("--force", help="Hard power action instead of ACPI")]
InstanceArg = Annotated[str, typer.Argument(help="Instance id or name")]


def _settle(ctx: typer.Context, instance: dict, want: str, timeout: float) -> dict:
    if instance.get("status") == want:
        return instance
    return wait_for_status(client(ctx), INSTANCE.item(instance["id"]),
                           label=f"instance {instance['id']}", want={want}, timeout=timeout)


@app.command("create")
def create_instance(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name")],
    instance_type: Annotated[str, typer.Option("--type", help="Instance type, e.g. ecs.t1.small")],
    image: Annotated[str, typer.Option("--image", help="Image id or name")],
    vswitch: Annotated[str, typer.Option("--vswitch", help="vSwitch id or name")],
    security_groups: Annotated[list[str], typer.Option(
        "--sg", help="Security group id or name; repeat for up to 5")],
    keypair: Annotated[str | None, typer.Option("--keypair", help="Key pair id or name")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="Private IP in the vSwitch "
                                           "(default: a free one)")] = None,
    hostname: Annotated[str | None, typer.Option(help="Guest host name (default: the id)")]
    = None,
    user_data_file: Annotated[Path | None, typer.Option(
        "--user-data-file", exists=True, dir_okay=False, readable=True,
        help="cloud-init user data (UTF-8 text, at most 32 KiB)")] = None,
    disk_size: Annotated[int | None, typer.Option(
        "--disk-size", min=1, help="System disk in GiB (default: the image's minimum)")] = None,
    client_token: Annotated[str | None, typer.Option(
        "--client-token", help="Idempotency key: retrying with it never makes a second "
        "instance")] = None,
    description: Annotated[str, typer.Option(help="Free text")] = "",
    count: Annotated[int | None, typer.Option(
        "--count", help="Create this many (1-100) at once, all or none; NAME and --hostname "
        "may then be a pattern like web-[1,3] (web-001, web-002, ...) or hold "
        "${instance_id}")] = None,
    placement: Annotated[str | None, typer.Option(
        "--placement", help="spread (least loaded host) or pack (most loaded that fits); "
        "default: the region's")] = None,
    deployment_set: Annotated[str | None, typer.Option(
        "--deployment-set", help="Deployment set id or name to join (one member per host)")]
    = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check everything and choose the host, create nothing; prints the "
        "placement explanation")] = False,
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create an instance (or --count of them); it starts at once (Pending → Starting →
    Running)."""
    api = client(ctx)
    body: dict = {
        "name": name, "instance_type": instance_type, "image_id": resolve(api, IMAGE, image),
        "vswitch_id": resolve(api, VSWITCH, vswitch),
        "security_group_ids": [resolve(api, SECURITY_GROUP, sg) for sg in security_groups],
        "description": description,
    }
    optional = {"key_pair_id": resolve(api, KEY_PAIR, keypair) if keypair else None,
                "private_ip_address": ip, "hostname": hostname,
                "system_disk_size_gib": disk_size, "client_token": client_token,
                "placement_policy": placement,
                "deployment_set_id": resolve(api, DEPLOYMENT_SET, deployment_set)
                if deployment_set else None}
    body.update({k: v for k, v in optional.items() if v is not None})
    if user_data_file is not None:
        try:
            body["user_data"] = user_data_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {user_data_file} as UTF-8 text: {exc}") from None
    if dry_run:
        body["dry_run"] = True
        render_explanation(api.post(INSTANCE.path, body), output)
        return
    if count is not None:
        batch = api.post(INSTANCE.path + "/batch", {**body, "amount": count})
        items = batch["items"]
        if wait:
            items = [_settle(ctx, i, "Running", timeout) for i in items]
        render_list({"items": items, "next_token": None}, COLUMNS, output)
        return
    instance = api.post(INSTANCE.path, body)
    if wait:
        instance = _settle(ctx, instance, "Running", timeout)
    render_object(instance, output)


@app.command("list")
def list_instances(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only this status (Deleted ones are listed "
                                               "only when asked for)")] = None,
    vpc: Annotated[str | None, typer.Option(help="Only this VPC's (id or name)")] = None,
    vswitch: Annotated[str | None, typer.Option(help="Only this vSwitch's (id or name)")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's (id or name)")] = None,
    name: Annotated[str | None, typer.Option(help="Only instances with this name")] = None,
    output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
    next_token: NextTokenOpt = None,
) -> None:
    """List instances."""
    api = client(ctx)
    filters = {
        "status": status, "name": name,
        "vpc_id": resolve(api, VPC, vpc) if vpc else None,
        "vswitch_id": resolve(api, VSWITCH, vswitch) if vswitch else None,
        "host_id": resolve(api, HOST, host) if host else None,
    }
    render_list(list_page_or_all(ctx, INSTANCE.path, max_results, next_token, **filters),
                COLUMNS, output)


@app.command("show")
def show_instance(ctx: typer.Context, instance: InstanceArg,
                  output: OutputOpt = OutputFormat.table) -> None:
    """Show one instance."""
    api = client(ctx)
    render_object(api.get(INSTANCE.item(resolve(api, INSTANCE, instance))), output)


@app.command("start")
def start_instance(ctx: typer.Context, instance: InstanceArg, wait: WaitOpt = False,
                   timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                   output: OutputOpt = OutputFormat.table) -> None:
    """Start a stopped instance."""
    api = client(ctx)
    answer = api.post(INSTANCE.item(resolve(api, INSTANCE, instance)) + "/start", {})
    render_object(_settle(ctx, answer, "Running", timeout) if wait else answer, output)


@app.command("stop")
def stop_instance(
    ctx: typer.Context, instance: InstanceArg, force: ForceOpt = False,
    stop_timeout: Annotated[int | None, typer.Option(
        "--stop-timeout", min=1, max=3600,
        help="Seconds of graceful shutdown before power-off (default: the controller's)")] = None,
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Stop an instance: ACPI shutdown, powered off after a timeout (or at once with --force)."""
    api = client(ctx)
    body: dict = {"force": force}
    if stop_timeout is not None:
        body["stop_timeout_s"] = stop_timeout
    answer = api.post(INSTANCE.item(resolve(api, INSTANCE, instance)) + "/stop", body)
    render_object(_settle(ctx, answer, "Stopped", timeout) if wait else answer, output)


@app.command("reboot")
def reboot_instance(ctx: typer.Context, instance: InstanceArg, force: ForceOpt = False,
                    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                    output: OutputOpt = OutputFormat.table) -> None:
    """Reboot a running instance (ACPI reboot, or a reset with --force)."""
    api = client(ctx)
    instance_id = resolve(api, INSTANCE, instance)
    operation = api.post(INSTANCE.item(instance_id) + "/reboot", {"force": force})
    if wait and isinstance(operation, dict) and "id" in operation:
        operation = _wait_operation(ctx, operation, timeout)
    render_object(operation, output)


def _wait_operation(ctx: typer.Context, operation: dict, timeout: float) -> dict:
    return wait_for_operation(client(ctx), operation, "/operations", timeout)


@app.command("delete")
def delete_instance(ctx: typer.Context, instance: InstanceArg,
                    force: Annotated[bool, typer.Option(
                        "--force", help="Delete even if running (powers it off)")] = False,
                    wait: Annotated[bool, typer.Option(
                        "--wait", help="Poll until the instance is Deleted")] = False,
                    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
                    output: OutputOpt = OutputFormat.table) -> None:
    """Delete an instance (only Stopped ones unless --force); its disks go with it."""
    api = client(ctx)
    instance_id = resolve(api, INSTANCE, instance)
    answer = api.delete(INSTANCE.item(instance_id), force=force or None)
    if wait:
        answer = wait_for_status(api, INSTANCE.item(instance_id), label=f"instance {instance_id}",
                                 want={"Deleted"}, timeout=timeout, gone_ok=True) or answer
    if isinstance(answer, dict) and answer.get("id"):
        render_object(answer, output)
    else:
        render_message(answer or {"id": instance_id, "deleted": True}, output,
                       f"deleting {instance_id}")


@app.command("console")
def console_instance(ctx: typer.Context, instance: InstanceArg,
                     follow: Annotated[bool, typer.Option(
                         "--follow", "-f", help="Keep printing new output as the guest writes "
                         "it, until Ctrl-C")] = False,
                     output: OutputOpt = OutputFormat.table) -> None:
    """Print the instance's serial console log (--follow: and stream it live)."""
    api = client(ctx)
    instance_id = resolve(api, INSTANCE, instance)
    if follow:
        _follow_console(api, instance_id)
        return
    try:
        response = api.request("GET", INSTANCE.item(instance_id) + "/console")
    except ApiError as exc:
        # A bare 404 (no resource code) means the route itself is missing.
        if exc.status in (404, 405) and exc.code in ("NotFound", "MethodNotAllowed"):
            raise CliError("this controller does not expose instance consoles "
                           f"(GET {INSTANCE.path}/{{id}}/console); read the console log on the "
                           "instance's host instead") from None
        raise
    if "json" in response.headers.get("content-type", ""):
        data = response.json()
        if output is OutputFormat.json:
            print_json(data)
            return
        text = next((data[k] for k in ("output", "log", "content", "data")
                     if isinstance(data, dict) and isinstance(data.get(k), str)), None)
        if text is None:
            render_object(data, output)
            return
    else:
        text = response.text
        if output is OutputFormat.json:
            print_json({"instance_id": instance_id, "output": text})
            return
    typer.echo(text, nl=not text.endswith("\n"))


def _follow_console(api, instance_id: str) -> None:
    """Print the console log, then its new output as it arrives, until Ctrl-C.

    The stream ends when the instance is deleted; a stream cut by a controller
    restart is resumed from the last byte printed.
    """
    out = sys.stdout.buffer
    offset = 0
    try:
        while True:
            try:
                for chunk in api.stream(INSTANCE.item(instance_id) + "/console/stream",
                                        params={"offset": offset}):
                    out.write(chunk)
                    out.flush()
                    offset += len(chunk)
            except CliError as exc:
                if exc.exit_code != EXIT_UNREACHABLE:
                    raise
                note(f"console stream interrupted ({exc.message}); reconnecting")
                time.sleep(2)
                continue
            try:
                if api.get(INSTANCE.item(instance_id)).get("status") == "Deleted":
                    return
            except ApiError as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(1)
    except KeyboardInterrupt:
        pass

from controller.cli import instance_ops  # noqa: E402,F401  (registers change-type, modify, ...)
