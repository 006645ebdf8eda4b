"""``miniecs events``: the event log (API mutations and status transitions), or follow it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from controller.cli.context import OutputOpt, client
from controller.cli.output import OutputFormat, col, render_list

FOLLOW_WAIT_S = 25  # below the client's 30 s timeout

COLUMNS = [col("ID", "id"), col("TIME", "created_at"), col("KIND", "kind"),
           col("TYPE", "resource_type"), col("RESOURCE", "resource_id"),
           col("WHAT", "what"), col("OUTCOME", "outcome"), col("BY", "by")]


def describe(ev: dict) -> dict:
    """The event with three summary cells: what, outcome, by whom."""
    if ev["kind"] == "api":
        what = f"{ev['method']} {ev['route']}"
        outcome = str(ev["status_code"]) + (f" {ev['error_code']}" if ev["error_code"] else "")
    else:
        what = f"{ev['old_status'] or '-'} -> {ev['new_status']}"
        outcome = ev["message"] or ""
        if ev["cause"]:
            what += f" ({ev['cause']})"
    by = f"{ev['actor_type']}:{ev['actor_name'] or ev['actor_id']}"
    return {**ev, "what": what, "outcome": outcome, "by": by}


def line(ev: dict) -> str:
    d = describe(ev)
    parts = [str(d["id"]), d["created_at"], d["kind"], f"{d['resource_type']}/"
             f"{d['resource_id'] or '-'}", d["what"], d["outcome"], d["by"]]
    return "  ".join(p for p in parts if p)


def events_command(
    ctx: typer.Context,
    resource: Annotated[str | None, typer.Option("--resource", "-r",
                                                 help="Only events of this resource id")] = None,
    resource_type: Annotated[str | None, typer.Option("--type", help="Only this resource type "
                                                      "(instance, host, disk, ...)")] = None,
    kind: Annotated[str | None, typer.Option(help="Only api (mutations) or status events")]
    = None,
    since: Annotated[str | None, typer.Option(help="Only at or after this ISO time with a zone,"
                                              " e.g. 2024-05-01T12:00:00Z")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many recent events to show")]
    = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing new events as they happen "
                                              "(Ctrl-C stops)")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Show the most recent events (oldest first); --follow keeps printing new ones."""
    api = client(ctx)
    filters = {"resource_id": resource, "resource_type": resource_type, "kind": kind,
               "since": since}
    page = api.get("/events", **filters, newest_first=True, max_results=limit)
    items = list(reversed(page["items"]))
    last = page["last_id"]
    if not follow:
        render_list({"items": [describe(e) for e in items], "next_token": None}
                    if output is OutputFormat.table else {"items": items, "next_token": None},
                    COLUMNS, output)
        return
    for ev in items:
        _emit(ev, output)
    try:
        while True:
            page = api.get("/events", **filters, after=last, wait=FOLLOW_WAIT_S, max_results=100)
            for ev in page["items"]:
                _emit(ev, output)
            last = max(last, page["last_id"])
    except KeyboardInterrupt:
        return


def _emit(ev: dict, output: OutputFormat) -> None:
    text = json.dumps(ev, separators=(",", ":")) if output is OutputFormat.json else line(ev)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
