"""Routes: /api/v1/hosts (hosts are created by agent enrolment)"""

from fastapi import APIRouter, Query, Response, status

from agent.spec import HostEnrolled

from controller.api.deps import AdminDep, DbDep, PageDep, SettingsDep
from controller.schemas import hosts as schema
from controller.services import evacuation, host_removal
from controller.services import hosts as service

router = APIRouter(prefix="/hosts", tags=["hosts"])


@router.get("", response_model=schema.HostList, summary="List hosts")
def list_hosts(_: AdminDep, db: DbDep, settings: SettingsDep, page: PageDep,
               zone_id: str | None = Query(None, description="Only this zone",
                                           examples=["zone-a"])) -> schema.HostList:
    return service.list_hosts(db, settings, page.max_results, page.next_token, zone_id)


@router.get("/{host_id}", response_model=schema.Host, summary="Show a host")
def get_host(_: AdminDep, db: DbDep, settings: SettingsDep, host_id: str) -> schema.Host:
    return service.get_host(db, settings, host_id)


@router.patch("/{host_id}", response_model=schema.Host,
              summary="Put a host in or out of maintenance, or override its overcommit ratios")
def update_host(_: AdminDep, db: DbDep, settings: SettingsDep, host_id: str,
                req: schema.HostUpdate) -> schema.Host:
    return service.update_host(db, settings, host_id, req)


@router.delete("/{host_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a host from the region (refused while it holds instances, disks "
                       "or snapshots); its agent token stops working")
def delete_host(_: AdminDep, db: DbDep, host_id: str) -> Response:
    host_removal.delete_host(db, host_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
@router.post("/{host_id}/rekey", response_model=HostEnrolled,
             summary="Re-key a host: a new agent token, shown once; the old one is refused at once")
def rekey_host(_: AdminDep, db: DbDep, host_id: str) -> HostEnrolled:
    host, token = service.rekey_host(db, host_id)
    return HostEnrolled(host_id=host, host_token=token)


@router.post("/{host_id}/evacuate", response_model=schema.HostEvacuation,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Rebuild every instance of a down host on other hosts (from their images: "
                     "what their disks held there is lost); the host goes into maintenance")
def evacuate_host(_: AdminDep, db: DbDep, settings: SettingsDep, host_id: str,
                  accept_data_loss: bool = Query(
                      False, description="Required (true): the instances' disks and snapshots "
                      "on this host are lost; each is rebuilt from its image")
                  ) -> schema.HostEvacuation:
    return evacuation.evacuate_host(db, settings, host_id, accept_data_loss=accept_data_loss)
