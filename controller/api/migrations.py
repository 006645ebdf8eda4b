"""Routes: instance migration, host maintenance and drain, and the agents' disk transfer."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from controller.api.deps import AdminDep, DbDep, HostDep, PageDep, SettingsDep
from controller.schemas import hosts as host_schema
from controller.schemas import migrations as schema
from controller.services import hosts as host_service
from controller.services import migrations as service
from controller.services.image_exports import Hasher

router = APIRouter(tags=["migrations"])


@router.post("/instances/{instance_id}/migrate", response_model=schema.Migration,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Move an instance to another host: live when Running, cold when Stopped")
def migrate_instance(_: AdminDep, db: DbDep, settings: SettingsDep, instance_id: str,
                     req: schema.MigrationCreate | None = None) -> schema.Migration:
    return service.start_migration(db, settings, instance_id, req or schema.MigrationCreate())


@router.get("/migrations", response_model=schema.MigrationList, summary="List migrations")
def list_migrations(_: AdminDep, db: DbDep, page: PageDep,
                    instance_id: str | None = Query(None, description="Only this instance"),
                    host_id: str | None = Query(None, description="Only from or to this host")
                    ) -> schema.MigrationList:
    return service.list_migrations(db, page.max_results, page.next_token, instance_id, host_id)


@router.get("/migrations/{migration_id}", response_model=schema.Migration,
            summary="Show a migration and its outcome")
def get_migration(_: AdminDep, db: DbDep, migration_id: str) -> schema.Migration:
    return service.get_migration(db, migration_id)


@router.post("/migrations/{migration_id}/cancel", response_model=schema.Migration,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Cancel a migration that has not switched over; the instance stays on "
             "its source host as it was")
def cancel_migration(_: AdminDep, db: DbDep, settings: SettingsDep,
                     migration_id: str) -> schema.Migration:
    return service.cancel_migration(db, settings, migration_id)


@router.post("/hosts/{host_id}/maintenance", response_model=host_schema.Host,
             summary="Put a host in maintenance (on: nothing new lands there) or back (off)")
def set_maintenance(_: AdminDep, db: DbDep, settings: SettingsDep, host_id: str,
                    on: bool = Query(True, description="true: maintenance on; false: off")
                    ) -> host_schema.Host:
    return host_service.update_host(db, settings, host_id,
                                    host_schema.HostUpdate(maintenance=on))


@router.post("/hosts/{host_id}/drain", response_model=schema.HostDrain,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Maintenance on, then migrate every instance away (live or cold)")
def drain_host(_: AdminDep, db: DbDep, settings: SettingsDep, host_id: str) -> schema.HostDrain:
    return service.drain_host(db, settings, host_id)


@router.get("/hosts/{host_id}/drain", response_model=schema.HostDrain,
            summary="Progress of a host's drain: instances left, migrations started")
def drain_status(_: AdminDep, db: DbDep, host_id: str) -> schema.HostDrain:
    return service.drain_status(db, host_id)


# ---- agents: the disk files of a cold migration --------------------------------------

@router.put("/agent/migrations/{migration_id}/disks/{disk_id}", tags=["agent"],
            summary="Source host: upload a disk file of a cold migration (sha256 verified)")
async def upload_disk(request: Request, host_id: HostDep, db: DbDep, settings: SettingsDep,
                      migration_id: str, disk_id: str) -> dict:
    claimed = request.headers.get("x-content-sha256", "")
    tmp = await run_in_threadpool(service.upload_target, db, settings, host_id, migration_id,
                                  disk_id)
    sink = Hasher(tmp)
    try:
        async for chunk in request.stream():
            await run_in_threadpool(sink.write, chunk)
    except BaseException:
        sink.close()
        tmp.unlink(missing_ok=True)
        raise
    digest = sink.close()
    return await run_in_threadpool(service.publish_disk, db, settings, migration_id, disk_id,
                                   tmp, digest, sink.size, claimed)


@router.get("/agent/migrations/{migration_id}/disks/{disk_id}", tags=["agent"],
            response_class=FileResponse,
            summary="Target host: download a disk file of a cold migration (Range ok)")
def download_disk(host_id: HostDep, db: DbDep, settings: SettingsDep, migration_id: str,
                  disk_id: str) -> FileResponse:
    path = service.download_path(db, settings, host_id, migration_id, disk_id)
    return FileResponse(path, media_type="application/octet-stream")
