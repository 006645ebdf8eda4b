"""The ``miniecs`` app: global options, ``configure``, and one group per API resource."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controller.cli import (
    hosts, images, instance_types, instances, key_pairs, security_groups, vpcs, vswitches, zones,
)
from controller.cli import eips
from controller.cli import disks
from controller.cli import snapshot_policies
from controller.cli import ssh
from controller.cli import deployment_sets, placement
from controller.cli import migrations  # also adds `instance migrate`, `host maintenance|drain`
from controller.cli import events as events_cli
from controller.cli import drift as drift_cli
from controller.cli import projects as projects_cli
from controller.cli.client import api_base_url
from controller.cli.context import CliState, ErrorReportingGroup, OutputOpt
from controller.cli.errors import CliError
from controller.cli.output import OutputFormat, note, print_json, render_object
from controller.cli.profiles import DEFAULT_PROFILE, Profile, save_profile

app = typer.Typer(
    cls=ErrorReportingGroup, name="miniecs", no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Operate a miniecs region: zones, hosts, images, key pairs, VPCs, vSwitches, "
         "security groups and instances.",
    epilog="Profiles live in ~/.config/miniecs/config.toml (MINIECS_CONFIG moves it; "
           "MINIECS_ENDPOINT and MINIECS_TOKEN override the profile).")


@app.callback()
def main(ctx: typer.Context,
         profile: Annotated[str | None, typer.Option(
             "--profile", "-p", envvar="MINIECS_PROFILE",
             help="Profile of the config file to use [default: default]")] = None) -> None:
    """Operate a miniecs region."""
    ctx.obj = CliState(profile_name=profile)


@app.command("configure")
def configure(
    endpoint: Annotated[str, typer.Option(help="Controller URL, e.g. http://10.0.0.1:8080")],
    token: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                       help="Admin API token or API key (asked for when "
                                       "left out)")],
    profile: Annotated[str, typer.Option("--profile", "-p",
                                         help="Profile to write")] = DEFAULT_PROFILE,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", exists=True, dir_okay=False, help="CA bundle for an https endpoint")]
    = None,
    output: OutputOpt = OutputFormat.table,
    project: Annotated[str | None, typer.Option(
        "--project", help="Act in this project (an admin's X-Miniecs-Project)")] = None,
) -> None:
    """Write a profile (endpoint and token) to the config file, readable only by you."""
    if not endpoint.startswith(("http://", "https://")):
        raise CliError(f"endpoint must start with http:// or https://, not {endpoint!r}")
    if not token.strip():
        raise CliError("token must not be empty")
    endpoint = endpoint.rstrip("/")
    path = save_profile(Profile(name=profile, endpoint=endpoint, token=token.strip(),
                                ca_file=str(ca_file.resolve()) if ca_file else None,
                                project=project))
    result = {"profile": profile, "endpoint": endpoint, "api": api_base_url(endpoint),
              "config": str(path)}
    if output is OutputFormat.json:
        print_json(result)
    else:
        render_object(result, output)
        note(f"profile {profile!r} written to {path} (mode 0600)")


app.add_typer(zones.app, name="zone")
app.add_typer(hosts.app, name="host")
app.add_typer(instance_types.app, name="instance-type")
app.add_typer(images.app, name="image")
app.add_typer(key_pairs.app, name="keypair")
app.add_typer(vpcs.app, name="vpc")
app.add_typer(vswitches.app, name="vswitch")
app.add_typer(security_groups.app, name="sg")
app.add_typer(instances.app, name="instance")
app.add_typer(eips.app, name="eip")
app.add_typer(disks.disk_app, name="disk")
app.add_typer(disks.snapshot_app, name="snapshot")
app.add_typer(snapshot_policies.app, name="snapshot-policy")
app.add_typer(migrations.app, name="migration")
app.command("ssh")(ssh.ssh)
app.add_typer(deployment_sets.app, name="deployment-set")
app.add_typer(placement.app, name="placement")
app.add_typer(projects_cli.project_app, name="project")
app.add_typer(projects_cli.user_app, name="user")
app.add_typer(projects_cli.apikey_app, name="apikey")
app.command("events")(events_cli.events_command)
app.command("status")(drift_cli.status_command)

if __name__ == "__main__":
    app()
