"""``miniecs host``: enrolled hypervisors (they enrol themselves through their agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import (
    Column, OutputFormat, col, render_list, render_message, render_object,
)
from controller.cli.resources import HOST, resolve

app = typer.Typer(help="Hypervisors: capacity, allocation and health.", no_args_is_help=True)


def _usage(key: str, unit: str = "") -> Column:
    def get(obj: dict) -> str:
        used = (obj.get("allocated") or {}).get(key, "?")
        total = (obj.get("capacity") or {}).get(key, "?")
        return f"{used}/{total}{unit}"
    return Column(key.split("_")[0].upper() + (f" ({unit.strip()})" if unit else ""), get)


COLUMNS = [col("ID", "id"), col("NAME", "name"), col("ZONE", "zone_id"), col("STATE", "state"),
           col("VIRT", "virt_type"), _usage("vcpus"), _usage("memory_mib"), _usage("disk_gib"),
           col("GEN", "generation_applied"), col("HEARTBEAT", "last_heartbeat")]


@app.command("list")
def list_hosts(ctx: typer.Context,
               zone: Annotated[str | None, typer.Option(help="Only hosts of this zone")] = None,
               output: OutputOpt = OutputFormat.table, max_results: MaxResultsOpt = None,
               next_token: NextTokenOpt = None) -> None:
    """List hosts (vCPU, memory and disk shown as allocated/capacity)."""
    render_list(list_page_or_all(ctx, HOST.path, max_results, next_token, zone_id=zone),
                COLUMNS, output)


@app.command("show")
def show_host(ctx: typer.Context,
              host: Annotated[str, typer.Argument(help="Host id or name")],
              output: OutputOpt = OutputFormat.table) -> None:
    """Show one host."""
    api = client(ctx)
    render_object(api.get(HOST.item(resolve(api, HOST, host))), output)


@app.command("delete")
def delete_host(ctx: typer.Context,
                host: Annotated[str, typer.Argument(help="Host id or name")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Remove a host (refused while it holds instances, disks or snapshots).

    Stop its agent first: an agent that still has the enrolment token enrols again as a
    new, empty host.
    """
    api = client(ctx)
    host_id = resolve(api, HOST, host)
    answer = api.delete(HOST.item(host_id))
    render_message(answer or {"id": host_id, "deleted": True}, output, f"deleted {host_id}")


@app.command("rekey")
def rekey_host(ctx: typer.Context,
               host: Annotated[str, typer.Argument(help="Host id or name")],
               output: OutputOpt = OutputFormat.table) -> None:
    """Give a host a new agent token (shown once); the old token stops working at once.

    Put the token into the agent's config as ``host_token = "..."``: the agent picks it
    up when the controller refuses its old token (or at its next start).
    """
    api = client(ctx)
    host_id = resolve(api, HOST, host)
    render_object(api.post(f"{HOST.item(host_id)}/rekey"), output)


@app.command("add")
def add_host(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(help="USER@ADDRESS to install over SSH (root, or "
                                              "a user with passwordless sudo)")],
        identity: Annotated[Path | None, typer.Option(
            "--identity", "-i", help="SSH private key (default: ssh-agent and ~/.ssh keys)")] = None,
        zone: Annotated[str, typer.Option(help="Zone the host joins")] = "zone-a",
        port: Annotated[int, typer.Option(min=1, max=65535, help="SSH port")] = 22,
        name: Annotated[str | None, typer.Option(help="Host name (default: the host's "
                                                 "short hostname)")] = None,
        prefix: Annotated[str, typer.Option(help="Where on the host miniecs is installed "
                                            "(venv, wheels, config)")] = "/opt/miniecs",
        controller_url: Annotated[str | None, typer.Option(
            help="Controller URL as the host reaches it (default: this CLI's endpoint)")] = None,
        underlay_address: Annotated[str | None, typer.Option(
            help="Host address for VXLAN between hosts (default: the address SSH reached)")]
        = None,
        uplink_interface: Annotated[str | None, typer.Option(
            help="Host interface toward the outside world (outbound NAT, EIPs)")] = None,
        virt_type: Annotated[str, typer.Option(
            help="kvm, qemu (TCG) or auto (probe KVM on the host)")] = "auto",
        libvirt_uri: Annotated[str, typer.Option(help="libvirt URI on the host")]
        = "qemu:///system",
        known_hosts: Annotated[Path, typer.Option(help="known_hosts file to check and record "
                                                  "the host key in")]
        = Path.home() / ".ssh" / "known_hosts",
        accept_fingerprint: Annotated[str | None, typer.Option(
            help="Trust an unknown host key with this SHA256:... fingerprint")] = None,
        wheelhouse: Annotated[Path | None, typer.Option(
            help="Directory of wheels (miniecs and its dependencies) to install; default: "
                 "build them from this source tree")] = None,
        timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the host to "
                                               "report ready")] = 300.0,
        python: Annotated[str, typer.Option(help="The host's python3 for the virtualenv "
                                            "(by path)")] = "/usr/bin/python3",
        output: OutputOpt = OutputFormat.table) -> None:
    """Install the agent on a machine over SSH, enrol it and wait until it is ready."""
    from controller.cli.errors import CliError
    from controller.cli.host_add import AddOptions
    from controller.cli.host_add import add_host as run_add
    from controller.cli.host_ssh import parse_target

    if virt_type not in ("auto", "kvm", "qemu"):
        raise CliError("--virt-type must be auto, kvm or qemu", 2)
    api = client(ctx)
    host = run_add(api, AddOptions(
        target=parse_target(target, port), identity=identity, zone=zone, name=name,
        prefix=prefix, controller_url=controller_url or api.endpoint,
        underlay_address=underlay_address, uplink_interface=uplink_interface,
        virt_type=virt_type, libvirt_uri=libvirt_uri, known_hosts=known_hosts,
        accept_fingerprint=accept_fingerprint, wheelhouse=wheelhouse, timeout=timeout,
        python=python))
    render_object(host, output)
