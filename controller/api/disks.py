"""Routes: /api/v1/disks and /api/v1/disk-operations"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep, SettingsDep
from controller.schemas import disks as schema
from controller.services import disks as service

router = APIRouter(tags=["disks"])


@router.post("/disks", response_model=schema.Disk, status_code=status.HTTP_202_ACCEPTED,
             summary="Create a data disk (empty or from a snapshot), optionally attached")
def create_disk(_: AdminDep, db: DbDep, settings: SettingsDep,
                req: schema.DiskCreate) -> schema.Disk:
    return service.create_disk(db, settings, req)


@router.get("/disks", response_model=schema.DiskList, summary="List disks")
def list_disks(_: AdminDep, db: DbDep, page: PageDep,
               instance_id: str | None = Query(None, description="Only this instance's"),
               status_: schema.DiskStatus | None = Query(None, alias="status",
                                                         description="Only this status"),
               role: str | None = Query(None, description="system or data")) -> schema.DiskList:
    return service.list_disks(db, page.max_results, page.next_token, instance_id=instance_id,
                              status=status_, role=role)


@router.get("/disks/{disk_id}", response_model=schema.Disk, summary="Show a disk")
def get_disk(_: AdminDep, db: DbDep, disk_id: str) -> schema.Disk:
    return service.get_disk(db, disk_id)


@router.post("/disks/{disk_id}/attach", response_model=schema.Disk,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Attach to an instance on the same host (hot-plug when Running)")
def attach_disk(_: AdminDep, db: DbDep, disk_id: str, req: schema.DiskAttach) -> schema.Disk:
    return service.attach_disk(db, disk_id, req)


@router.post("/disks/{disk_id}/detach", response_model=schema.Disk,
             status_code=status.HTTP_202_ACCEPTED, summary="Detach (hot-unplug when Running)")
def detach_disk(_: AdminDep, db: DbDep, disk_id: str) -> schema.Disk:
    return service.detach_disk(db, disk_id)


@router.post("/disks/{disk_id}/resize", response_model=schema.Disk,
             status_code=status.HTTP_202_ACCEPTED, summary="Grow (online or offline)")
def resize_disk(_: AdminDep, db: DbDep, disk_id: str, req: schema.DiskResize) -> schema.Disk:
    return service.resize_disk(db, disk_id, req)


@router.post("/disks/{disk_id}/reset", response_model=schema.DiskOperation,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Roll back to a snapshot of this disk (instance Stopped)")
def reset_disk(_: AdminDep, db: DbDep, disk_id: str, req: schema.DiskReset) -> schema.DiskOperation:
    return service.reset_disk(db, disk_id, req)


@router.delete("/disks/{disk_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a detached data disk (its snapshots stay)")
def delete_disk(_: AdminDep, db: DbDep, disk_id: str) -> Response:
    service.delete_disk(db, disk_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/disk-operations/{operation_id}", response_model=schema.DiskOperation,
            summary="Show a disk operation (rollback, export) and its outcome")
def get_disk_operation(_: AdminDep, db: DbDep, operation_id: str) -> schema.DiskOperation:
    return service.get_operation(db, operation_id)
