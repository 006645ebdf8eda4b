"""``miniecs project|user|apikey``: tenants, their quotas, users and API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.errors import CliError
from controller.cli.output import (
    Column, OutputFormat, col, note, print_json, render_list, render_message, render_object,
)
from controller.cli.resources import Resource, resolve

QUOTAS = ("instances", "vcpus", "memory_mib", "disks", "disk_gib", "eips", "snapshots")
USER = Resource("user", "user", "/users", "u-")

project_app = typer.Typer(help="Projects (tenants): create, list, show usage vs quota, delete.",
                          no_args_is_help=True)
user_app = typer.Typer(help="Users of a project (they hold API keys).", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys: a role (admin, member, read-only) in the user's "
                         "project; the key is printed once.", no_args_is_help=True)


def _used(key: str) -> Column:
    def value(p: dict) -> str:
        limit = p["quota"].get(key)
        return f"{p['usage'][key]}/{'-' if limit is None else limit}"
    return Column(key.upper().replace("_", " "), value)


PROJECT_COLUMNS = [col("ID", "id"), *[_used(q) for q in QUOTAS], col("CREATED", "created_at")]
USER_COLUMNS = [col("ID", "id"), col("NAME", "name"), col("PROJECT", "project_id"),
                col("CREATED", "created_at")]
KEY_COLUMNS = [col("ID", "id"), col("NAME", "name"), col("USER", "user_id"),
               col("PROJECT", "project_id"), col("ROLE", "role"), col("CREATED", "created_at"),
               col("REVOKED", "revoked_at")]


def _quota_table(project: dict) -> list[dict]:
    return [{"quota": q, "used": project["usage"][q], "limit": project["quota"].get(q)}
            for q in QUOTAS]


def _render_project(project: dict, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json(project)
        return
    render_object(project, output, hide=("quota", "usage"))
    render_list({"items": _quota_table(project), "next_token": None},
                [col("QUOTA", "quota"), col("USED", "used"), col("LIMIT", "limit")], output)


def _parse_limits(limits: list[str]) -> dict:
    """``instances=10 vcpus=unlimited`` -> ``{"instances": 10, "vcpus": None}``."""
    out: dict = {}
    for item in limits:
        name, sep, value = item.partition("=")
        if not sep or name not in QUOTAS:
            raise CliError(f"quota {item!r}: use NAME=N or NAME=unlimited with NAME one of "
                           f"{', '.join(QUOTAS)}")
        if value == "unlimited":
            out[name] = None
        elif value.isdigit():
            out[name] = int(value)
        else:
            raise CliError(f"quota {item!r}: {value!r} is neither a number nor 'unlimited'")
    return out


LimitsArg = Annotated[list[str] | None, typer.Argument(
    help="Limits as NAME=N or NAME=unlimited; NAME: " + ", ".join(QUOTAS))]


@project_app.command("create")
def create_project(ctx: typer.Context,
                   project_id: Annotated[str, typer.Argument(help="Project id, e.g. acme")],
                   limits: LimitsArg = None,
                   description: Annotated[str, typer.Option(help="Free text")] = "",
                   output: OutputOpt = OutputFormat.table) -> None:
    """Create a project (admin), optionally with quota limits."""
    _render_project(client(ctx).post("/projects", {
        "id": project_id, "description": description,
        "quota": _parse_limits(limits or [])}), output)


@project_app.command("list")
def list_projects(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
                  max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List projects with usage/limit per quota (a tenant key sees its own)."""
    render_list(list_page_or_all(ctx, "/projects", max_results, next_token), PROJECT_COLUMNS,
                output)


@project_app.command("show")
def show_project(ctx: typer.Context, project_id: Annotated[str, typer.Argument()],
                 output: OutputOpt = OutputFormat.table) -> None:
    """Show a project: its quota limits and what it uses now."""
    _render_project(client(ctx).get(f"/projects/{project_id}"), output)


@project_app.command("quota-set")
def set_quota(ctx: typer.Context, project_id: Annotated[str, typer.Argument()],
              limits: LimitsArg = None, output: OutputOpt = OutputFormat.table) -> None:
    """Change quota limits (admin); the ones not named stay as they are."""
    body = _parse_limits(limits or [])
    if not body:
        raise CliError("name at least one limit, e.g. instances=10")
    _render_project(client(ctx).request("PUT", f"/projects/{project_id}/quota",
                                        json=body).json(), output)


@project_app.command("delete")
def delete_project(ctx: typer.Context, project_id: Annotated[str, typer.Argument()],
                   output: OutputOpt = OutputFormat.table) -> None:
    """Delete an empty project (no resources, no users)."""
    answer = client(ctx).delete(f"/projects/{project_id}")
    render_message(answer or {"id": project_id, "deleted": True}, output,
                   f"deleted project {project_id}")


@user_app.command("create")
def create_user(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name")],
                project: Annotated[str, typer.Option("--project", help="Project id")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Create a user in a project (admin)."""
    render_object(client(ctx).post("/users", {"name": name, "project_id": project}), output)


@user_app.command("list")
def list_users(ctx: typer.Context,
               project: Annotated[str | None, typer.Option("--project")] = None,
               output: OutputOpt = OutputFormat.table,
               max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List users (of one project with --project)."""
    render_list(list_page_or_all(ctx, "/users", max_results, next_token, project_id=project),
                USER_COLUMNS, output)


@user_app.command("delete")
def delete_user(ctx: typer.Context,
                user: Annotated[str, typer.Argument(help="User id or name")],
                output: OutputOpt = OutputFormat.table) -> None:
    """Delete a user; every key it holds is revoked."""
    api = client(ctx)
    user_id = resolve(api, USER, user)
    answer = api.delete(USER.item(user_id))
    render_message(answer or {"id": user_id, "deleted": True}, output, f"deleted {user_id}")


@apikey_app.command("create")
def create_api_key(ctx: typer.Context,
                   user: Annotated[str, typer.Option("--user", help="User id or name")],
                   role: Annotated[str, typer.Option(
                       "--role", help="admin, member or read-only")] = "member",
                   name: Annotated[str, typer.Option(help="What the key is for")] = "key",
                   output: OutputOpt = OutputFormat.table) -> None:
    """Create an API key. The key is printed this once only: store it (e.g. `miniecs
    configure --token KEY`)."""
    if role not in ("admin", "member", "read-only"):
        raise CliError(f"--role must be admin, member or read-only, not {role!r}")
    api = client(ctx)
    created = api.post("/api-keys", {"user_id": resolve(api, USER, user), "role": role,
                                      "name": name})
    if output is OutputFormat.json:
        print_json(created)
        return
    render_object(created, output, hide=("key",))
    note("API key (shown only this once; store it now):")
    typer.echo(created["key"])


@apikey_app.command("list")
def list_api_keys(ctx: typer.Context,
                  user: Annotated[str | None, typer.Option("--user", help="User id")] = None,
                  project: Annotated[str | None, typer.Option("--project")] = None,
                  output: OutputOpt = OutputFormat.table,
                  max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List API keys (never the key itself)."""
    render_list(list_page_or_all(ctx, "/api-keys", max_results, next_token, user_id=user,
                                 project_id=project), KEY_COLUMNS, output)


@apikey_app.command("revoke")
def revoke_api_key(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id")],
                   output: OutputOpt = OutputFormat.table) -> None:
    """Revoke an API key: it is refused (401) from now on."""
    answer = client(ctx).delete(f"/api-keys/{key_id}")
    render_message(answer or {"id": key_id, "revoked": True}, output, f"revoked {key_id}")
