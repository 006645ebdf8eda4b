"""Host enrolment: an agent presents the region's enrolment token and gets its own."""

from __future__ import annotations

from sqlalchemy import select

from agent import spec
from controller import ids
from controller.db import Database
from controller.errors import InvalidParameter
from controller.models import Host, Zone
from controller.services import enrolment_tokens, host_tokens
from controller.tokens import HOST_PREFIX, hash_token, new_token
from controller.validation import validate_name


def register_host(db: Database, req: spec.HostRegistration,
                  one_time_token: str | None = None) -> tuple[spec.HostEnrolled, bool]:
    """Enrol a host, or re-key the host of that name (same id, new token, the old one dies).

    The caller has checked the enrolment token; a one-time token (its settings key)
    is used up in the same transaction, and only for the host name it was minted
    for. Returns the answer and whether the
    host is new.
    """
    validate_name(req.name, "name")
    token = new_token(HOST_PREFIX)

    def attempt(session) -> tuple[spec.HostEnrolled, bool]:
        if one_time_token is not None:
            enrolment_tokens.consume(session, one_time_token, req.name)
        if session.get(Zone, req.zone) is None:
            raise InvalidParameter("InvalidZoneId.NotFound", "zone",
                                   f"zone {req.zone!r} does not exist; create it first")
        host = session.scalars(select(Host).where(Host.name == req.name)
                               .with_for_update()).first()
        created = host is None
        if host is None:
            host = Host(id=ids.new_id("host"), name=req.name, generation=1)
            session.add(host)
        elif host.underlay_address != req.underlay_address:
            _underlay_moved(session, host.id)
        host.zone_id = req.zone
        host.underlay_address = req.underlay_address
        host.virt_type = req.virt_type
        host.agent_version = req.agent_version
        host.capacity_vcpus = req.capacity.vcpus
        host.capacity_memory_mib = req.capacity.memory_mib
        host.capacity_disk_gib = req.capacity.disk_gib
        host.token_hash = hash_token(token)
        session.flush()
        return spec.HostEnrolled(host_id=host.id, host_token=token), created

    enrolled = db.write_retrying(attempt)
    host_tokens.tokens_changed(db)  # a re-enrolled host's old token dies now
    return enrolled


def _underlay_moved(session, host_id: str) -> None:
    """A host enrolling again from another underlay address: its own specs (local VTEP) and
    those of every host sharing a VPC with it (its ports' VTEP, the VXLAN peers) change."""
    from controller.models import Instance, Nic, VSwitch
    from controller.services.notify import bump_generation
    from controller.services.specs import bump_hosts_of_vpc

    bump_generation(session, host_id)  # host row first, as everywhere
    for vpc_id in session.scalars(
            select(VSwitch.vpc_id).distinct()
            .join(Nic, Nic.vswitch_id == VSwitch.id).join(Instance, Instance.id == Nic.instance_id)
            .where(Instance.host_id == host_id, Instance.delete_requested_at.is_(None))
            .order_by(VSwitch.vpc_id)):
        bump_hosts_of_vpc(session, vpc_id)
