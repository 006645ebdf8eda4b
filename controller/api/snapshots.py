"""Routes: /api/v1/snapshots"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import snapshots as schema
from controller.services import snapshots as service

router = APIRouter(tags=["snapshots"])


@router.post("/snapshots", response_model=schema.Snapshot, status_code=status.HTTP_202_ACCEPTED,
             summary="Snapshot a disk (progressing, then accomplished)")
def create_snapshot(_: AdminDep, db: DbDep, req: schema.SnapshotCreate) -> schema.Snapshot:
    return service.create_snapshot(db, req)


@router.get("/snapshots", response_model=schema.SnapshotList, summary="List snapshots")
def list_snapshots(_: AdminDep, db: DbDep, page: PageDep,
                   disk_id: str | None = Query(None, description="Only this disk's"),
                   status_: schema.SnapshotStatus | None = Query(None, alias="status",
                                                                 description="Only this status"),
                   policy_id: str | None = Query(None, description="Only this policy's")
                   ) -> schema.SnapshotList:
    return service.list_snapshots(db, page.max_results, page.next_token, disk_id=disk_id,
                                  status=status_, policy_id=policy_id)


@router.get("/snapshots/{snapshot_id}", response_model=schema.Snapshot, summary="Show a snapshot")
def get_snapshot(_: AdminDep, db: DbDep, snapshot_id: str) -> schema.Snapshot:
    return service.get_snapshot(db, snapshot_id)


@router.delete("/snapshots/{snapshot_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a snapshot (any order; the disk and other snapshots are untouched)")
def delete_snapshot(_: AdminDep, db: DbDep, snapshot_id: str) -> Response:
    service.delete_snapshot(db, snapshot_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
