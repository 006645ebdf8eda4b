"""Routes: /api/v1/instances and /api/v1/operations"""

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from controller.api.deps import AdminDep, DbDep, PageDep, SettingsDep
from controller.schemas import instances as schema
from controller.schemas import operations as op_schema
from controller.schemas.instance_ops import InstanceModify
from controller.schemas.placement import DryRunResult
from controller.services import consoles, placement_explain
from controller.services import instance_actions as actions
from controller.services import instance_ops
from controller.services import instances as service

router = APIRouter(tags=["instances"])


@router.post("/instances", response_model=schema.Instance, status_code=status.HTTP_202_ACCEPTED,
             summary="Create an instance (answers at once, status Pending)",
             responses={200: {"model": schema.Instance | DryRunResult,
                              "description": "The client token names an earlier create (the "
                              "Instance), or dry_run was set (a DryRunResult: nothing created)"}})
def create_instance(_: AdminDep, db: DbDep, settings: SettingsDep, req: schema.InstanceCreate,
                    response: Response) -> schema.Instance:
    if req.dry_run:
        answer = placement_explain.dry_run(db, settings, req)
        return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    instance, created = service.create_instance(db, settings, req)
    if not created:
        response.status_code = status.HTTP_200_OK
    return instance


@router.get("/instances", response_model=schema.InstanceList, summary="List instances")
def list_instances(
    _: AdminDep, db: DbDep, page: PageDep,
    status_: schema.InstanceStatus | None = Query(
        None, alias="status", description="Only this status (Deleted ones only when asked)",
        examples=["Running"]),
    vpc_id: str | None = Query(None, description="Only this VPC"),
    vswitch_id: str | None = Query(None, description="Only this vSwitch"),
    host_id: str | None = Query(None, description="Only this host"),
    name: str | None = Query(None, max_length=128, description="Only this exact name"),
) -> schema.InstanceList:
    page_ = service.list_instances(db, page.max_results, page.next_token, status=status_,
                                   vpc_id=vpc_id, vswitch_id=vswitch_id, host_id=host_id,
                                   name=name)
    # serialised once, in this worker thread (a page of 100 went through the response
    # model's dict round trip again on the event loop)
    return Response(content=page_.model_dump_json(), media_type="application/json")


@router.get("/instances/{instance_id}", response_model=schema.Instance,
            summary="Show an instance")
def get_instance(_: AdminDep, db: DbDep, instance_id: str) -> schema.Instance:
    return service.get_instance(db, instance_id)


@router.patch("/instances/{instance_id}", response_model=schema.Instance,
              summary="Modify attributes: name, description, deletion protection, hostname, "
              "user data (Stopped only), security groups of the primary NIC")
def update_instance(_: AdminDep, db: DbDep, instance_id: str,
                    req: InstanceModify) -> schema.Instance:
    return instance_ops.modify_instance(db, instance_id, req)


@router.post("/instances/{instance_id}/start", response_model=schema.Instance,
             status_code=status.HTTP_202_ACCEPTED, summary="Start (desired power running)")
def start_instance(_: AdminDep, db: DbDep, instance_id: str) -> schema.Instance:
    return actions.start_instance(db, instance_id)


@router.post("/instances/{instance_id}/stop", response_model=schema.Instance,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Stop: ACPI shutdown, power-off after the timeout; force powers off at once")
def stop_instance(_: AdminDep, db: DbDep, settings: SettingsDep, instance_id: str,
                  req: schema.InstanceStop | None = None) -> schema.Instance:
    req = req or schema.InstanceStop()
    return actions.stop_instance(db, settings, instance_id, req.force, req.stop_timeout_s)


@router.post("/instances/{instance_id}/reboot", response_model=op_schema.Operation,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Reboot a Running instance (a one-shot operation)")
def reboot_instance(_: AdminDep, db: DbDep, instance_id: str,
                    req: schema.InstanceReboot | None = None) -> op_schema.Operation:
    return actions.reboot_instance(db, instance_id, (req or schema.InstanceReboot()).force)


@router.delete("/instances/{instance_id}", response_model=schema.Instance,
               status_code=status.HTTP_202_ACCEPTED,
               summary="Delete (Deleting, then Deleted when the host has removed it)")
def delete_instance(_: AdminDep, db: DbDep, instance_id: str,
                    force: bool = Query(False, description="Also when running (powers it off)",
                                        examples=[False])) -> schema.Instance:
    return actions.delete_instance(db, instance_id, force)


@router.get("/instances/{instance_id}/console", response_model=schema.InstanceConsole,
            summary="Read the serial console log (pushed by the instance's agent)")
def get_console(_: AdminDep, db: DbDep, settings: SettingsDep, instance_id: str,
                offset: int = Query(0, ge=0, description="Start at this byte offset"),
                max_bytes: int = Query(65536, ge=1, le=1 << 20, description="Read at most this much")
                ) -> schema.InstanceConsole:
    data, start, size = consoles.read_console(db, settings, instance_id, offset, max_bytes)
    return schema.InstanceConsole(instance_id=instance_id, offset=start,
                                  next_offset=start + len(data), size=size,
                                  output=data.decode("utf-8", errors="replace"))


@router.get("/operations/{operation_id}", response_model=op_schema.Operation,
            tags=["operations"], summary="Show a one-shot operation and its outcome")
def get_operation(_: AdminDep, db: DbDep, operation_id: str) -> op_schema.Operation:
    return actions.get_operation(db, operation_id)
