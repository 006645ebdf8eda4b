"""Routes: instance operations after launch, batch create, console streaming.

``/api/v1/instances/batch``, ``/api/v1/instances/{id}/change-type``,
``/replace-system-disk``, ``/reinit-system-disk`` and ``/console/stream``.
"""

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from controller.api.deps import AdminDep, DbDep, SettingsDep
from controller.schemas import disks as disk_schema
from controller.schemas import instance_ops as schema
from controller.schemas import instances as inst_schema
from controller.services import consoles
from controller.services import instance_batch as batch
from controller.services import instance_ops as ops
from controller.services.instances import get_instance

router = APIRouter(tags=["instances"])


@router.post("/instances/batch", response_model=schema.InstanceBatch,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Create 1-100 instances at once, all placed or none (ECS RunInstances)",
             responses={200: {"model": schema.InstanceBatch,
                              "description": "The client token names an earlier batch"}})
def create_batch(_: AdminDep, db: DbDep, settings: SettingsDep, req: schema.InstanceBatchCreate,
                 response: Response) -> schema.InstanceBatch:
    result = batch.create_batch(db, settings, req)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return result


@router.post("/instances/{instance_id}/change-type", response_model=inst_schema.Instance,
             summary="Change the instance type of a Stopped instance (ECS ModifyInstanceSpec)")
def change_type(_: AdminDep, db: DbDep, settings: SettingsDep, instance_id: str,
                req: schema.InstanceTypeChange) -> inst_schema.Instance:
    return ops.modify_instance_type(db, settings, instance_id, req)


@router.post("/instances/{instance_id}/replace-system-disk", response_model=inst_schema.Instance,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Give a Stopped instance a new system disk from an image "
             "(ECS ReplaceSystemDisk)")
def replace_system_disk(_: AdminDep, db: DbDep, settings: SettingsDep, instance_id: str,
                        req: schema.SystemDiskReplace) -> inst_schema.Instance:
    return ops.replace_system_disk(db, settings, instance_id, req)


@router.post("/instances/{instance_id}/reinit-system-disk",
             response_model=disk_schema.DiskOperation, status_code=status.HTTP_202_ACCEPTED,
             summary="Put a Stopped instance's system disk back to its image (ECS ReInitDisk); "
             "follow it at /disk-operations/{id}")
def reinit_system_disk(_: AdminDep, db: DbDep, instance_id: str) -> disk_schema.DiskOperation:
    return ops.reinit_system_disk(db, instance_id)


@router.get("/instances/{instance_id}/console/stream",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "The console log from `offset`, then live"}},
            summary="Stream the serial console: the log so far, then new output as the agent "
            "pushes it, until the client disconnects or the instance is deleted")
async def stream_console(_: AdminDep, db: DbDep, settings: SettingsDep, instance_id: str,
                         request: Request,
                         offset: int = Query(0, ge=0, description="Start at this byte offset")
                         ) -> StreamingResponse:
    await run_in_threadpool(get_instance, db, instance_id)  # 404 before the stream starts
    return StreamingResponse(
        consoles.follow_console(db, settings, instance_id, offset, request.is_disconnected),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
