"""Routes: /api/v1/events — the event log, with a follow long-poll."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from controller.api.deps import AdminDep, DbDep, SettingsDep
from controller.errors import InvalidParameter
from controller.schemas import events as schema
from controller.schemas.common import MAX_PAGE
from controller.services import events as service

router = APIRouter(prefix="/events", tags=["events"])


def _cursor(next_token: str | None) -> int | None:
    if next_token is None:
        return None
    if not next_token.isdigit():
        raise InvalidParameter("InvalidParameter.NextToken", "next_token",
                               "next_token is not one this API returned")
    return int(next_token)


@router.get("", response_model=schema.EventList,
            summary="List events (API mutations and status transitions); wait>0 follows")
async def list_events(
    request: Request, _: AdminDep, db: DbDep, settings: SettingsDep,
    resource_id: Annotated[str | None, Query(max_length=64, description="Only this resource",
                                             examples=["i-0a1b2c3d4e5f6g7h8i9j"])] = None,
    resource_type: Annotated[str | None, Query(max_length=32, description="Only this type",
                                               examples=["instance"])] = None,
    kind: Annotated[schema.EventKind | None, Query(description="Only api or status events")
                    ] = None,
    since_text: Annotated[str | None, Query(
        alias="since", max_length=64, description="Only events at or after this time (ISO 8601 "
        "with a zone)", examples=["2024-05-01T12:00:00Z"],
        json_schema_extra={"format": "date-time"})] = None,
    after: Annotated[int | None, Query(
        ge=0, le=2 ** 63 - 1, description="Only events with a larger id (the follow cursor: "
        "last_id of the previous answer)")] = None,
    newest_first: Annotated[bool, Query(description="Newest first (paging goes back in time)")
                            ] = False,
    max_results: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 50,
    next_token: Annotated[str | None, Query(max_length=32, description="From the previous "
                                            "page's answer")] = None,
    wait: Annotated[float, Query(ge=0, le=60, description="Follow: when nothing matches yet, "
                                 "wait up to this many seconds for a new event")] = 0,
) -> schema.EventList:
    since = _parse_since(since_text)
    cursor = _cursor(next_token)
    if cursor is None:
        cursor = after

    def fetch():
        return service.list_events(db, resource_id=resource_id, resource_type=resource_type,
                                   kind=kind, since=since, after=cursor,
                                   newest_first=newest_first, limit=max_results + 1)

    notifier: service.EventNotifier = request.app.state.event_notifier
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    ev = notifier.subscribe()
    try:
        rows = await run_in_threadpool(fetch)
        while not rows and wait > 0 and not newest_first:
            remaining = deadline - loop.time()
            if remaining <= 0 or await request.is_disconnected():
                break
            try:
                await asyncio.wait_for(ev.wait(),
                                       timeout=min(remaining, settings.event_follow_poll_s))
            except TimeoutError:
                pass
            ev.clear()
            rows = await run_in_threadpool(fetch)
    finally:
        notifier.unsubscribe(ev)
    more = len(rows) > max_results
    rows = rows[:max_results]
    items = [schema.Event.model_validate(r) for r in rows]
    last_id = max([r.id for r in rows], default=cursor or 0)
    if not rows and cursor is None:
        last_id = await run_in_threadpool(service.latest_event_id, db)
    return schema.EventList(items=items, next_token=str(rows[-1].id) if more else None,
                            last_id=last_id)


def _parse_since(text: str | None) -> datetime | None:
    """An ISO 8601 time with a zone; numbers (epoch seconds) and zone-less times are refused."""
    if text is None:
        return None
    try:
        since = datetime.fromisoformat(text) if "T" in text or " " in text else None
    except ValueError:
        since = None
    if since is None:
        raise InvalidParameter("InvalidParameter.Since", "since",
                               f"since must be an ISO 8601 time such as 2024-05-01T12:00:00Z, "
                               f"not {text[:64]!r}")
    if since.tzinfo is None:
        raise InvalidParameter("InvalidParameter.Since", "since",
                               "since needs a time zone (e.g. 2024-05-01T12:00:00Z)")
    return since
