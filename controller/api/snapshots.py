"""Routes: /api/v1/snapshots"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import snapshots as schema
from controller.services import snapshot_policies as policies
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


@router.post("/snapshot-policies", response_model=schema.SnapshotPolicy,
             status_code=status.HTTP_201_CREATED, summary="Create an automatic snapshot policy")
def create_policy(_: AdminDep, db: DbDep, req: schema.SnapshotPolicyCreate
                  ) -> schema.SnapshotPolicy:
    return policies.create_policy(db, req)


@router.get("/snapshot-policies", response_model=schema.SnapshotPolicyList,
            summary="List snapshot policies")
def list_policies(_: AdminDep, db: DbDep, page: PageDep) -> schema.SnapshotPolicyList:
    return policies.list_policies(db, page.max_results, page.next_token)


@router.get("/snapshot-policies/{policy_id}", response_model=schema.SnapshotPolicy,
            summary="Show a snapshot policy and its disks")
def get_policy(_: AdminDep, db: DbDep, policy_id: str) -> schema.SnapshotPolicy:
    return policies.get_policy(db, policy_id)


@router.post("/snapshot-policies/{policy_id}/apply", response_model=schema.SnapshotPolicy,
             summary="Apply the policy to disks (a disk has at most one policy)")
def apply_policy(_: AdminDep, db: DbDep, policy_id: str, req: schema.SnapshotPolicyDisks
                 ) -> schema.SnapshotPolicy:
    return policies.apply_policy(db, policy_id, req.disk_ids)


@router.post("/snapshot-policies/{policy_id}/cancel", response_model=schema.SnapshotPolicy,
             summary="Stop applying the policy to disks (their snapshots stay)")
def cancel_policy(_: AdminDep, db: DbDep, policy_id: str, req: schema.SnapshotPolicyDisks
                  ) -> schema.SnapshotPolicy:
    return policies.cancel_policy(db, policy_id, req.disk_ids)


@router.delete("/snapshot-policies/{policy_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a snapshot policy (the snapshots it took stay)")
def delete_policy(_: AdminDep, db: DbDep, policy_id: str) -> Response:
    policies.delete_policy(db, policy_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
