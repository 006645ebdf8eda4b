"""Routes: /api/v1/agent — the controller side of docs/agent-api.md."""

from __future__ import annotations

import asyncio
import itertools
import logging

import anyio
from fastapi import APIRouter, Query, Request, Response, WebSocket, WebSocketDisconnect, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import ValidationError

from agent import spec
from controller.api.deps import (DbDep, EnrolmentDep, HostDep, NotifierDep, SettingsDep,
                                 close_ws, host_of_token, ws_bearer)
from controller.config import Settings
from controller.db import Database
from controller.errors import DomainError, NotFound
from controller.schemas.images import Image
from controller.schemas.instances import ConsolePushed
from controller.services import consoles, enrolment, events, reports
from controller.services import image_exports
from controller.services import images as images_service
from controller.services.spec_cache import SpecCache
from controller.services.specs import (GENERATION, HostHead, host_needs_image,
                                       host_not_found, host_spec_body, net_generations)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/agent", tags=["agent"])


@router.post("/register", response_model=spec.HostEnrolled, status_code=status.HTTP_201_CREATED,
             summary="Enrol a host (enrolment token); re-registering a name re-keys it")
def register(one_time: EnrolmentDep, db: DbDep, req: spec.HostRegistration,
             response: Response) -> spec.HostEnrolled:
    enrolled, created = enrolment.register_host(db, req, one_time_token=one_time)
    if not created:
        response.status_code = status.HTTP_200_OK
    return enrolled


def _spec_bodies(db: Database, host_ids: list[str], settings: Settings, cache: SpecCache
                 ) -> dict[str, tuple[int, bytes] | Exception]:
    """The specs of ``host_ids`` as JSON with their generations (or the exception of each
    that failed: NotFound for a removed host), read together: one read transaction, the
    hosts' heads in one statement and the net generations of the VPCs of those whose spec
    is assembled from cached parts in another. A change wakes every host of its VPC at
    once; each answering in a transaction and thread hop of its own, its head and VPCs'
    generations read alone, was most of a peer's answer. An answer comes from the cache
    when the host's generation has not moved."""
    out: dict[str, tuple[int, bytes] | Exception] = {}
    with db.read() as session:
        heads = HostHead.read_many(session, host_ids)
        todo: list[HostHead] = []
        for host_id in host_ids:
            head = heads.get(host_id)
            cached = None if head is None or cache.check \
                else cache.get(host_id, head.generation)
            if head is None:
                out[host_id] = host_not_found(host_id)
            elif cached is not None:
                out[host_id] = head.generation, cached
            else:
                todo.append(head)
        kept = (cache.fragments.local(h.id, h.local_generation) for h in todo)
        net_gens = net_generations(session, {v for local in kept if local is not None
                                             for v in local.vpc_ids})
        for head in todo:
            try:
                out[head.id] = cache.answer_at(head.id, head.generation,
                                               _compiler(session, db, head, settings,
                                                         net_gens))
            except Exception as exc:  # noqa: BLE001 - that host's answer fails, not the others'
                out[head.id] = exc
    return out


def _compiler(session, db: Database, head: HostHead, settings: Settings, net_gens):
    def compile_(fragments) -> tuple[int, bytes, bool]:
        # the fresh compile (check mode) reads the host itself, like any other
        # straight to JSON (the response model's round trip through a dict of Python
        # objects cost as much again for a host with many instances)
        generation, body = host_spec_body(
            session, head.id, settings, fragments, head=head if fragments is not None else None,
            net_gens=net_gens)
        if db.is_sqlite or fragments is not None:
            # SQLite: one snapshot for the whole read transaction (WAL), nothing
            # committed since the first read is seen. An assembly's answer is cached
            # and sent whether or not a change committed meanwhile (its bump brings
            # the next answer): only check mode's comparison asks
            return generation, body, True
        # PostgreSQL (read committed) sees each statement's latest commits: a fresh
        # compile is compared with the cached answer only when nothing moved meanwhile
        now = session.scalar(GENERATION, {"host_id": head.id})
        return generation, body, now == generation
    return compile_


class _SpecReads:
    """Spec answers asked at about the same time, read together (``_spec_bodies``): the
    channels and long-polls a change wakes ask in the same turn of the event loop (after
    the same coalescing sleep). One read gathers what is waiting (``READ_BATCH`` hosts at
    most); answers asked while reads run wait for the next, which starts at once while
    fewer than the spec threads run."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[asyncio.Future]] = {}
        self.running = 0
        self.gathering = False


_READS: dict[tuple[asyncio.AbstractEventLoop, int], _SpecReads] = {}
# hosts per read at most: every host of a region is woken at once (an agents' reconnect
# wave, a change to a group every host has): the first should not wait for the 500th
READ_BATCH = 32


async def _spec_of(app, host_id: str) -> tuple[int, bytes]:
    """The host's spec body and generation (``_spec_bodies``, with the others asked now)."""
    loop = asyncio.get_running_loop()
    cache: SpecCache = app.state.spec_cache
    reads = _READS.get((loop, id(cache)))
    if reads is None:  # one per event loop and app (tests run several)
        for old in [k for k in _READS if k[0].is_closed()]:
            del _READS[old]
        reads = _READS[(loop, id(cache))] = _SpecReads()
    future = loop.create_future()
    reads.waiting.setdefault(host_id, []).append(future)
    _start_read(app, reads)
    return await future


def _start_read(app, reads: _SpecReads) -> None:
    if reads.waiting and not reads.gathering and reads.running < THREADS["spec"]:
        reads.running += 1
        reads.gathering = True
        asyncio.get_running_loop().create_task(_read_waiting(app, reads))


async def _read_waiting(app, reads: _SpecReads) -> None:
    batch: dict[str, list[asyncio.Future]] = {}
    try:
        try:
            await asyncio.sleep(0)  # the others woken in this turn of the loop ask meanwhile
        finally:
            for host_id in list(itertools.islice(reads.waiting, READ_BATCH)):
                batch[host_id] = reads.waiting.pop(host_id)
            reads.gathering = False
        _start_read(app, reads)  # the rest of the waiting, in another read
        state = app.state
        answers = await _in_threads("spec", _spec_bodies, state.db, list(batch),
                                    state.settings, state.spec_cache)
        for host_id, futures in batch.items():
            for future in futures:
                if future.done():  # its asker went away
                    continue
                outcome = answers[host_id]
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
    except BaseException as exc:
        for futures in batch.values():
            for future in futures:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
        raise
    finally:
        reads.running -= 1
        _start_read(app, reads)


_LIMITERS: dict[tuple[asyncio.AbstractEventLoop, str], anyio.CapacityLimiter] = {}
# threads of each kind of agent call: long-poll reads (a woken one must not queue behind
# writers) and reports (they queue on the database's writer anyway; more threads waiting
# only took the shared pool's 40 from the API, and 500 agents' reports starved creates)
THREADS = {"spec": 16, "report": 4}


async def _in_threads(kind: str, fn, *args):
    """Run ``fn`` in the threads kept for ``kind`` of agent call (not the shared pool)."""
    loop = asyncio.get_running_loop()
    limiter = _LIMITERS.get((loop, kind))
    if limiter is None:  # one per event loop (tests run several)
        for old in [k for k in _LIMITERS if k[0].is_closed()]:
            del _LIMITERS[old]
        limiter = _LIMITERS[(loop, kind)] = anyio.CapacityLimiter(THREADS[kind])
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


@router.get("/spec", response_model=spec.HostSpec,
            summary="Long-poll this host's spec: answers when generation > after, or after wait s")
async def get_spec(request: Request, host_id: HostDep, db: DbDep, settings: SettingsDep,
                   notifier: NotifierDep,
                   after: int = Query(-1, description="Last generation the agent has; -1: now"),
                   wait: float = Query(30.0, ge=0, description="Seconds to wait (max 60)")
                   ) -> spec.HostSpec:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.spec_wait_max_s)
    event = notifier.subscribe(host_id, after)
    try:
        while True:
            # the generation and the body in one read (a woken long-poll read the
            # generation, then again with the body: two thread hops and transactions)
            generation, body = await _spec_of(request.app, host_id)
            if after < 0 or generation > after:
                break
            remaining = deadline - loop.time()
            if remaining <= 0 or await request.is_disconnected():
                break
            try:
                # Woken by a commit in this process or by the shared poller
                # (notify.poll_generations, for other processes' commits); no
                # re-read of its own every few seconds: 500 waiters did 100 reads/s.
                await asyncio.wait_for(event.wait(), timeout=remaining)
                # let a burst of changes (a batch of creates) land in one spec
                await asyncio.sleep(settings.spec_coalesce_s)
            except TimeoutError:
                pass
            event.clear()
    finally:
        notifier.unsubscribe(host_id, event)
    return Response(content=body, media_type="application/json")


@router.post("/report", status_code=status.HTTP_204_NO_CONTENT,
             summary="Report observed state (also the heartbeat)")
async def report(host_id: HostDep, db: DbDep, settings: SettingsDep,
                 req: spec.HostReport) -> Response:
    await _in_threads("report", reports.apply_report, db, host_id, req, settings)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# An open channel checks its token at least this often (a revoked one closes with 4401);
# a report on it is checked before it is applied.
CHANNEL_CHECK_S = 5.0
CHANNEL_CAUSE = "WS /api/v1/agent/channel"


@router.websocket("/channel")
async def channel(websocket: WebSocket, after: int = -1) -> None:
    """The agent's channel (docs/agent-api.md): the host's spec pushed as it changes, the
    agent's reports taken back, on one connection the agent opened. What the long-poll
    and the report POST do, without a request each: a create changes the spec of every
    other host of its VPC, and each of them fetching it and acknowledging it was two HTTP
    requests (framework, token, a read to re-subscribe) per peer per create."""
    app = websocket.app
    db: Database = app.state.db
    token = ws_bearer(websocket)
    host = await host_of_token(db, token) if token else None
    if host is None:
        await close_ws(websocket, 4401, "unknown or revoked host token")
        return
    await websocket.accept()
    metrics = getattr(app.state, "metrics", None)
    if metrics is not None:
        metrics.agent_channels.inc()
    inbox = _Inbox()
    tasks = {asyncio.create_task(_push_specs(websocket, host[0], token, after)),
             asyncio.create_task(_receive_reports(websocket, inbox)),
             asyncio.create_task(_apply_reports(websocket, host, token, inbox))}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        code, reason = next(iter(done)).result()
    except (WebSocketDisconnect, OSError):  # the agent went away while we sent
        return
    except Exception:  # noqa: BLE001 - the agent reconnects; say why here
        log.exception("agent channel of host %s failed", host[0])
        code, reason = 1011, "internal error"
    finally:
        for task in tasks:
            task.cancel()
        if metrics is not None:
            metrics.agent_channels.dec()
    await close_ws(websocket, code, reason)


def _count(ws: WebSocket, kind: str) -> None:
    metrics = getattr(ws.app.state, "metrics", None)
    if metrics is not None:
        metrics.channel_messages.labels(kind=kind).inc()


async def _still_valid(db: Database, token: str) -> bool:
    return await host_of_token(db, token) is not None


async def _push_specs(ws: WebSocket, host_id: str, token: str, after: int) -> tuple[int, str]:
    """Send the spec whenever its generation differs from what the agent holds (``after``,
    then what was sent), and again when a cache entry aged out recompiled to something else
    (the long-poll's guard against a change without its bump)."""
    app = ws.app
    db, settings, notifier = app.state.db, app.state.settings, app.state.notifier
    loop = asyncio.get_running_loop()
    event = notifier.subscribe(host_id, after)
    sent, last = after, None  # the body last sent (None: the agent's own, unseen)
    try:
        while True:
            event.clear()  # a change committed from here on wakes the wait below
            try:
                generation, body = await _spec_of(app, host_id)
            except NotFound:
                return 4404, "host removed"
            # another generation than the agent's: newer, or older after a restore from a
            # backup (what the long-poll's timed-out answer delivered); or a recompile
            if generation != sent or (last is not None and body != last):
                if not await _still_valid(db, token):
                    return 4401, "host token revoked"
                await ws.send_bytes(body)
                _count(ws, "spec")
                sent, last = generation, body
                notifier.resubscribe(host_id, event, sent)
            read_at = loop.time()
            while True:
                try:
                    await asyncio.wait_for(event.wait(), timeout=CHANNEL_CHECK_S)
                    await asyncio.sleep(settings.spec_coalesce_s)  # a burst lands in one spec
                    break
                except TimeoutError:
                    if not await _still_valid(db, token):
                        return 4401, "host token revoked"
                    if loop.time() - read_at >= settings.spec_cache_max_age_s:
                        break
    finally:
        notifier.unsubscribe(host_id, event)


class _Inbox:
    """The latest report taken from a channel and not applied yet: a newer one replaces it,
    as the agent's own report thread sends only its latest (reports are level-triggered:
    each carries the host's whole observed state)."""

    def __init__(self) -> None:
        self.report: spec.HostReport | None = None
        self.ready = asyncio.Event()

    def put(self, report: spec.HostReport) -> None:
        self.report = report
        self.ready.set()

    async def take(self) -> spec.HostReport:
        await self.ready.wait()
        self.ready.clear()
        report, self.report = self.report, None
        return report


async def _receive_reports(ws: WebSocket, inbox: _Inbox) -> tuple[int, str]:
    """Read the agent's messages as they come. Never waits for a report to be applied: the
    server stops reading the connection until the application takes each message, and a
    channel not read for the ping timeout (20 s; reports queue behind four threads on a
    busy controller) is closed for a missed pong."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return 1000, ""
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        try:
            report = spec.HostReport.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "report"
            return 4400, f"invalid report: {where}: {first['msg']}"
        _count(ws, "report")
        inbox.put(report)


async def _apply_reports(ws: WebSocket, host: tuple[str, str], token: str, inbox: _Inbox
                         ) -> tuple[int, str]:
    """Apply the channel's reports, the latest one at a time, like ``POST /agent/report``
    (the status transitions they cause are the host's, caused by ``CHANNEL_CAUSE``)."""
    db, settings = ws.app.state.db, ws.app.state.settings
    host_id = host[0]
    # this task's own context (and the threads it runs reports in)
    events.set_actor(events.Actor(type="host", id=host_id, name=host[1], cause=CHANNEL_CAUSE))
    while True:
        report = await inbox.take()
        if not await _still_valid(db, token):
            return 4401, "host token revoked"
        try:
            await _in_threads("report", reports.apply_report, db, host_id, report, settings)
        except DomainError as exc:
            return (4403 if exc.status == 403 else 4400), f"{exc.code}: {exc.message}"


@router.post("/console/{instance_id}", response_model=ConsolePushed,
             summary="Push console output of an instance on this host at a byte offset")
async def push_console(request: Request, host_id: HostDep, db: DbDep, settings: SettingsDep,
                       instance_id: str,
                       offset: int = Query(..., ge=0, description="Offset of the body in the log")
                       ) -> ConsolePushed:
    data = await request.body()
    size = await run_in_threadpool(consoles.store_console, db, settings, host_id, instance_id,
                                   offset, data)
    return ConsolePushed(offset=size)


@router.get("/images/{image_id}/data", summary="Download an image in this host's spec (Range ok)",
            response_class=FileResponse)
def image_data(host_id: HostDep, db: DbDep, image_id: str) -> FileResponse:
    with db.read() as session:
        allowed = host_needs_image(session, host_id, image_id)
    path = images_service.image_file(db, image_id) if allowed else None
    if path is None or not path.is_file():
        raise NotFound("InvalidImageId.NotFound",
                       f"image {image_id!r} is not in this host's spec", "image_id")
    return FileResponse(path, media_type="application/octet-stream")


@router.put("/images/{image_id}/data", response_model=Image,
            summary="Upload an image this host exports from a snapshot (sha256 verified)")
async def upload_image_data(request: Request, host_id: HostDep, db: DbDep,
                            settings: SettingsDep, image_id: str) -> Image:
    claimed = request.headers.get("x-content-sha256", "")
    tmp = await run_in_threadpool(image_exports.export_target, db, settings, host_id, image_id)
    sink = image_exports.Hasher(tmp)
    try:
        async for chunk in request.stream():
            await run_in_threadpool(sink.write, chunk)
    except BaseException:
        sink.close()
        tmp.unlink(missing_ok=True)
        raise
    digest = sink.close()
    return await run_in_threadpool(image_exports.publish_upload, db, settings, image_id, tmp,
                                   digest, sink.size, claimed)
