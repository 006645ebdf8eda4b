"""What every command shares: the CLI state (profile, lazily built client) and the common
options (``-o``, ``--wait``, ``--timeout``, paging)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer
from typer.core import TyperGroup

from controller.cli.client import ApiClient
from controller.cli.errors import CliError
from controller.cli.output import OutputFormat
from controller.cli.profiles import load_profile
from controller.cli.waiting import DEFAULT_TIMEOUT_S


@dataclass
class CliState:
    """Set by the root callback; ``client()`` connects on first use only (so ``--help``
    and ``configure`` work without a profile)."""

    profile_name: str | None = None
    _client: ApiClient | None = field(default=None, repr=False)

    def client(self, ctx: typer.Context) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(load_profile(self.profile_name))
            ctx.find_root().call_on_close(self._client.close)
        return self._client


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_object(CliState)
    if obj is None:  # a sub-app invoked on its own (tests of one group)
        obj = ctx.ensure_object(CliState)
    return obj


def client(ctx: typer.Context) -> ApiClient:
    return state(ctx).client(ctx)


class ErrorReportingGroup(TyperGroup):
    """Root group: a ``CliError`` anywhere below becomes ``Error: ...`` and an exit code."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except CliError as exc:
            typer.echo(f"Error: {exc.message}", err=True)
            raise typer.Exit(exc.exit_code) from None


OutputOpt = Annotated[OutputFormat, typer.Option(
    "--output", "-o", case_sensitive=False, help="table for people, json for scripts "
    "(the API's JSON as it came).")]
WaitOpt = Annotated[bool, typer.Option(
    "--wait", help="Poll until the status settles; exit non-zero if it ends in Error.")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=1, help="Seconds --wait waits before giving up (exit 5).")]
MaxResultsOpt = Annotated[int | None, typer.Option(
    "--max-results", min=1, max=100, help="Fetch one page of this size (default: all pages).")]
NextTokenOpt = Annotated[str | None, typer.Option(
    "--next-token", help="Continue a paged listing from this token.")]

DEFAULT_TIMEOUT = DEFAULT_TIMEOUT_S


def list_page_or_all(ctx: typer.Context, path: str, max_results: int | None,
                     next_token: str | None, **filters) -> dict:
    """One page when paging options are given, else every page merged."""
    api = client(ctx)
    if max_results is None and next_token is None:
        return api.list_all(path, **filters)
    return api.get(path, **filters, max_results=max_results, next_token=next_token)
