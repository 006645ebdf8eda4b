"""Routes: /api/v1/agent — the controller side of docs/agent-api.md."""

from __future__ import annotations

import asyncio

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import select

from agent import spec
from controller.api.deps import DbDep, EnrolmentDep, HostDep, NotifierDep, SettingsDep
from controller.config import Settings
from controller.db import Database
from controller.errors import NotFound
from controller.models import Host
from controller.schemas.images import Image
from controller.schemas.instances import ConsolePushed
from controller.services import consoles, enrolment, reports
from controller.services import image_exports
from controller.services import images as images_service
from controller.services.spec_cache import SpecCache
from controller.services.specs import HostHead, compile_host_spec, host_needs_image

router = APIRouter(prefix="/agent", tags=["agent"])


@router.post("/register", response_model=spec.HostEnrolled, status_code=status.HTTP_201_CREATED,
             summary="Enrol a host (enrolment token); re-registering a name re-keys it")
def register(one_time: EnrolmentDep, db: DbDep, req: spec.HostRegistration,
             response: Response) -> spec.HostEnrolled:
    enrolled, created = enrolment.register_host(db, req, one_time_token=one_time)
    if not created:
        response.status_code = status.HTTP_200_OK
    return enrolled


def _spec_body(db: Database, host_id: str, settings: Settings, cache: SpecCache
               ) -> tuple[int, bytes]:
    """The host's spec as JSON and its generation: from the cache when the generation has
    not moved. One query when it has not; a peer's change (one VPC's part) costs two more:
    the VPCs' net generations, and on PostgreSQL the generation again after the compile."""
    with db.read() as session:
        head = HostHead.read(session, host_id)

        def compile_(fragments) -> tuple[int, bytes, bool]:
            # the fresh compile (check mode) reads the host itself, like any other
            compiled = compile_host_spec(session, host_id, settings, fragments,
                                         head=head if fragments is not None else None)
            # serialised once, straight to JSON (the response model's round trip through
            # a dict of Python objects cost as much again for a host with many instances)
            body = compiled.model_dump_json().encode()
            if db.is_sqlite:
                # one snapshot for the whole read transaction (WAL): nothing committed
                # since the first read is seen, so the generation is still the one read
                return compiled.generation, body, True
            # PostgreSQL (read committed) sees each statement's latest commits
            now = session.scalar(select(Host.generation).where(Host.id == host_id))
            return compiled.generation, body, now == compiled.generation

        return cache.answer_at(host_id, head.generation, compile_)


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


async def _read_in_thread(fn, *args):
    return await _in_threads("spec", fn, *args)


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
    cache = request.app.state.spec_cache
    try:
        while True:
            # the generation and the body in one read (a woken long-poll read the
            # generation, then again with the body: two thread hops and transactions)
            generation, body = await _read_in_thread(_spec_body, db, host_id, settings, cache)
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
