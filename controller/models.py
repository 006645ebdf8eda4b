"""The controller's tables (SQLAlchemy 2 typed ORM).

Desired columns are written by the API; status columns (``status``,
``status_reason``, ``observed_*``, ``last_heartbeat``, ``generation_applied``)
only from agent reports. ``hosts.generation`` is bumped in the same
transaction as every desired change that touches the host.
Migrations in ``controller/migrations`` must match this module
(``tests/unit/test_controller_migrations.py`` checks it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text,
    UniqueConstraint, text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from controller.models_owner import optional_project_column, project_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Zone(Timestamped, Base):
    __tablename__ = "zones"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(256), default="")


class Host(Timestamped, Base):
    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), index=True)
    underlay_address: Mapped[str] = mapped_column(String(64))
    virt_type: Mapped[str] = mapped_column(String(8))
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    capacity_vcpus: Mapped[int] = mapped_column(Integer)
    capacity_memory_mib: Mapped[int] = mapped_column(BigInteger)
    capacity_disk_gib: Mapped[int] = mapped_column(BigInteger)
    # None: use the controller-wide ratio from Settings.
    cpu_overcommit: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_overcommit: Mapped[float | None] = mapped_column(Float, nullable=True)
    disk_overcommit: Mapped[float | None] = mapped_column(Float, nullable=True)
    allocated_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    allocated_memory_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    allocated_disk_gib: Mapped[int] = mapped_column(BigInteger, default=0)
    # ready | maintenance (admin, desired) | down (missed heartbeats)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    # admin flag, apart from liveness: no new placements or migrations onto the host
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    # bumped with ``generation`` by every change of the host's own part of its spec (its
    # instances, disks, storage, migrations); not by a peer's change in one of its VPCs,
    # which bumps ``Vpc.net_generation`` instead (compiled spec fragments, spec_cache.py)
    local_generation: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    # status columns, written from reports only
    generation_applied: Mapped[int] = mapped_column(BigInteger, default=-1)
    generation_seen: Mapped[int] = mapped_column(BigInteger, default=-1)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_errors: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of strings")
    converged_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, doc="When the agent last applied the current generation")

    zone: Mapped[Zone] = relationship()


class InstanceType(Timestamped, Base):
    __tablename__ = "instance_types"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(256), default="")


PUBLIC_IMAGE = text("project_id IS NULL")


class Image(Timestamped, Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        Index("uq_images_public_name", "name", unique=True,
              sqlite_where=PUBLIC_IMAGE, postgresql_where=PUBLIC_IMAGE),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str | None] = optional_project_column("Owning project; NULL: public")
    # unique per project; public images (NULL project) among themselves: uq_images_public_name
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(256), default="")
    format: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(Text, doc="Path or URL it was imported from")
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    virtual_size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    min_disk_gib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="Creating")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str | None] = mapped_column(Text, nullable=True, doc="File in the image store")


class KeyPair(Timestamped, Base):
    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("project_id", "name"),)  # names belong to the project

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    key_type: Mapped[str] = mapped_column(String(32))


class Vpc(Timestamped, Base):
    __tablename__ = "vpcs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(256), default="")
    cidr_block: Mapped[str] = mapped_column(String(43))
    vni: Mapped[int] = mapped_column(Integer, unique=True)
    bridge_name: Mapped[str] = mapped_column(String(15), unique=True)
    # bumped (with its hosts' generations) by every change of the VPC's part of a host
    # spec: ports, gateways, NAT, group members and rules (spec_cache.py)
    net_generation: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")


class VSwitch(Timestamped, Base):
    __tablename__ = "vswitches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(256), default="")
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id"), index=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), index=True)
    cidr_block: Mapped[str] = mapped_column(String(43))
    gateway_ip: Mapped[str] = mapped_column(String(39))
    # outbound internet access (SNAT in the VPC's router namespaces), like an ECS NAT gateway
    nat_enabled: Mapped[bool] = mapped_column(Boolean, default=False)

    vpc: Mapped[Vpc] = relationship()


class SecurityGroup(Timestamped, Base):
    __tablename__ = "security_groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(256), default="")
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id"), index=True)
    # normal | enterprise (ECS group types); inner access: accept | drop (normal only)
    type: Mapped[str] = mapped_column(String(16), default="normal")
    inner_access_policy: Mapped[str] = mapped_column(String(8), default="accept")


class Instance(Timestamped, Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("project_id", "client_token"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    hostname: Mapped[str] = mapped_column(String(64))
    instance_type_id: Mapped[str] = mapped_column(ForeignKey("instance_types.id"))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    # Plain ids, not foreign keys: a Deleted instance keeps its history while the
    # image, vSwitch or key pair goes away. Live references hold through disks and NICs.
    image_id: Mapped[str] = mapped_column(String(32), index=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    vswitch_id: Mapped[str] = mapped_column(String(32), index=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"))
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    key_pair_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    # unique per project (uq_instances_project_id_client_token)
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deletion_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_id: Mapped[str | None] = mapped_column(
        String(32), nullable=True, index=True, doc="First member's id, for a batch create")
    # desired (API)
    desired_power: Mapped[str] = mapped_column(String(16), default="running")
    force_stop: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_timeout_s: Mapped[int] = mapped_column(Integer, default=60)
    power_serial: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0",
        doc="Starts asked through the API (the spec carries it: the agent tells a start "
        "from its hold of a guest that powered itself off)")
    delete_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delete_generation: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, doc="Host generation of the first spec without this instance")
    # status (agent reports)
    status: Mapped[str] = mapped_column(String(16), default="Pending", index=True)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    observed_power: Mapped[str | None] = mapped_column(String(16), nullable=True)
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reconcile_retries: Mapped[int] = mapped_column(Integer, default=0)
    domain_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # placement: the deployment set it belongs to (models_placement), a plain id
    deployment_set_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    converged_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, doc="When the status last reached the desired power")

    # No delete-orphan: a data disk detached from (or outliving) its instance stays a disk.
    disks: Mapped[list[Disk]] = relationship(back_populates="instance",
                                             cascade="all", order_by="Disk.device")
    nics: Mapped[list[Nic]] = relationship(back_populates="instance", cascade="all, delete-orphan",
                                           order_by="Nic.device_index")
    operations: Mapped[list[Operation]] = relationship(back_populates="instance",
                                                       order_by="Operation.created_at")


class Disk(Timestamped, Base):
    """A cloud disk: the system disk of an instance, or a data disk (attached or not).

    A disk is a local qcow2 file, so it lives on one host (``host_id``; for a
    system disk, its instance's). ``instance_id`` is the desired attachment;
    ``attached_to`` what the agent last saw (see ``services/disks.py``).
    """

    __tablename__ = "disks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    instance_id: Mapped[str | None] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), nullable=True, index=True)
    role: Mapped[str] = mapped_column(String(8), default="system")
    size_gib: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    device: Mapped[str] = mapped_column(String(8), default="vda")
    name: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    zone_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    delete_with_instance: Mapped[bool] = mapped_column(Boolean, default=True)
    source_snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # status (agent reports): Creating | Available | Attaching | In_use | Detaching | Error
    status: Mapped[str] = mapped_column(String(16), default="In_use")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    attached_to: Mapped[str | None] = mapped_column(String(32), nullable=True)
    observed_size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain_depth: Mapped[int | None] = mapped_column(Integer, nullable=True)

    instance: Mapped[Instance | None] = relationship(back_populates="disks")


class NicSecurityGroup(Base):
    __tablename__ = "nic_security_groups"

    nic_id: Mapped[str] = mapped_column(ForeignKey("nics.id", ondelete="CASCADE"),
                                        primary_key=True)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id"),
                                                   primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Nic(Timestamped, Base):
    __tablename__ = "nics"
    __table_args__ = (UniqueConstraint("vswitch_id", "ip"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"),
                                             index=True)
    vswitch_id: Mapped[str] = mapped_column(ForeignKey("vswitches.id"), index=True)
    ip: Mapped[str] = mapped_column(String(39))
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    tap_name: Mapped[str] = mapped_column(String(15), unique=True)
    device_index: Mapped[int] = mapped_column(Integer, default=0)

    instance: Mapped[Instance] = relationship(back_populates="nics")
    vswitch: Mapped[VSwitch] = relationship()
    security_groups: Mapped[list[NicSecurityGroup]] = relationship(
        cascade="all, delete-orphan", order_by="NicSecurityGroup.position")


class Operation(Timestamped, Base):
    """A one-shot action (reboot) carried in the spec until the agent reports its outcome."""

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = project_column()
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"),
                                             index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending | succeeded | failed | cancelled
    outcome: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    instance: Mapped[Instance] = relationship(back_populates="operations")


class ApiToken(Timestamped, Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # an API key: its user and project (an admin token of old has neither: every project)
    user_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    project_id: Mapped[str | None] = optional_project_column("Project of the key")
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="admin")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Setting(Base):
    """Region-wide key/values, e.g. ``enrolment_token_hash``."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


from controller import models_storage  # noqa: E402,F401  (snapshots, storage operations, policies)


from controller import models_net  # noqa: E402,F401  (registers the EIP table)

from controller import models_sg  # noqa: E402,F401  (registers the security-group rule table)

from controller import models_placement  # noqa: E402,F401  (deployment sets)
from controller import models_migration  # noqa: E402,F401  (registers the migration table)
from controller import models_events  # noqa: E402,F401  (registers the event log table)
from controller import models_tenancy  # noqa: E402,F401  (projects, users, project_id columns)
