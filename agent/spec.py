"""The host spec: the contract between the controller and an agent.

The controller compiles the region's desired state into one ``HostSpec`` per
hypervisor; the agent realises it and answers with a ``HostReport``. These
types are the whole vocabulary the two share: the controller imports them to
build specs, the agent imports nothing from the controller.

Every type is versioned through ``HostSpec.schema_version`` and the report's
``schema_version``; fields are only ever added with defaults, so an older
agent keeps reading a newer controller's spec.

Names of host objects (bridges, taps, namespaces, domains, files) are chosen
by the controller and carried here, so the agent never derives names of its
own and two hosts always agree on them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

# miniecs's mark on host objects: domains carry <metadata> in this namespace,
# bridges/taps/namespaces/chains carry these name prefixes.
METADATA_NS = "https://miniecs.dev/xmlns/domain/1"
METADATA_PREFIX = "miniecs"
BRIDGE_PREFIX = "mbr-"   # mbr-<10 chars>   (<= 15)
TAP_PREFIX = "mtap"      # mtap<11 chars>   (<= 15)
ROUTER_NS_PREFIX = "mrt-"  # router network namespace per VPC and host
VETH_PREFIX = "mgw"      # router veth pair: mgw<id>b on the bridge, mgw<id>r in the namespace
FIREWALL_PREFIX = "mecs-"  # iptables/ebtables chains and ipsets the agent owns (agent/firewall*.py)
VXLAN_PREFIX = "mvx-"    # mvx-<10 chars>: the VPC's VXLAN device on this host
UPLINK_VETH_PREFIX = "mup"  # mup<id>h in the host's namespace, mup<id>r in the router namespace

PowerState = Literal["running", "stopped"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ImageSpec(_Spec):
    """An image this host needs in its cache."""

    id: str = Field(description="Image id", examples=["m-8v1kq0x2y3z4a5b6c7d8"])
    sha256: str = Field(description="Hex sha256 of the image file as stored by the controller")
    format: Literal["qcow2", "raw"]
    size_bytes: int = Field(description="Size of the image file in bytes")
    virtual_size_bytes: int = Field(description="Virtual disk size of the image in bytes")
    url: str = Field(description="Where the agent downloads it, relative to the controller URL",
                     examples=["/api/v1/agent/images/m-8v1kq0x2y3z4a5b6c7d8/data"])


class DiskSpec(_Spec):
    """A disk of an instance: a local qcow2 file on this host."""

    id: str = Field(examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    role: Literal["system", "data"] = "system"
    size_bytes: int = Field(description="Virtual size; never below the image's virtual size")
    image_id: str | None = Field(default=None, description="Backing image (system disk)")
    device: str = Field(default="vda", description="Guest device name (target dev)")


class FirewallRuleSpec(_Spec):
    """One compiled security-group rule of a NIC, in evaluation order within its direction.

    ``peer`` is the remote end (source for ingress, destination for egress):
    a CIDR in ``peer_cidr`` or an address set (ipset) named in ``peer_set``.
    ``local_cidr`` narrows the NIC's own end (ECS's DestCidrIp on ingress).
    """

    id: str = Field(description="Rule id, or 'inner:<group id>' for a group's inner access")
    group_id: str = Field(description="Security group the rule comes from")
    priority: int = Field(ge=1, le=101, description="1-100; 101 is the implicit inner access")
    policy: Literal["accept", "drop"]
    protocol: Literal["tcp", "udp", "icmp", "all"]
    port_min: int | None = Field(default=None, description="Destination port range (tcp/udp)")
    port_max: int | None = None
    source_port_min: int | None = None
    source_port_max: int | None = None
    peer_cidr: str | None = None
    peer_set: str | None = Field(default=None, description="ipset of a peer group's member IPs")
    peer_group_id: str | None = None
    local_cidr: str | None = None


class NicFirewallSpec(_Spec):
    """A NIC's security: pooled rules of all its groups, sorted; defaults; conntrack zone."""

    ingress: list[FirewallRuleSpec] = Field(default_factory=list)
    egress: list[FirewallRuleSpec] = Field(default_factory=list)
    ingress_default: Literal["accept", "drop"] = "drop"
    egress_default: Literal["accept", "drop"] = "accept"
    ct_zone: int = Field(default=0, ge=0, le=65535, description="Conntrack zone of the NIC's VPC")


class AddressSetSpec(_Spec):
    """A security group's member IPs as an ipset, for rules that name the group."""

    name: str = Field(description="ipset name, <= 31 characters", examples=["mecs-g-4c6e8g0j2l4n6q8s0u2w"])
    group_id: str
    ips: list[str] = Field(default_factory=list)


class NicSpec(_Spec):
    """An instance's port on a vSwitch."""

    id: str = Field(examples=["eni-5d8a2c4e6f7b9a1c3d5e"])
    mac: str = Field(examples=["52:54:00:12:34:56"])
    ip: str = Field(examples=["10.0.1.23"])
    prefix_len: int = Field(examples=[24])
    gateway: str = Field(examples=["10.0.1.1"])
    vpc_id: str
    vswitch_id: str
    bridge: str = Field(description="Bridge the tap joins (the VPC's bridge on this host)")
    tap: str = Field(description="Tap device name, <= 15 characters")
    mtu: int = 1500
    security_group_ids: list[str] = Field(default_factory=list)
    firewall: NicFirewallSpec | None = Field(
        default=None, description="Security-group enforcement; None: the NIC is not filtered")


class OperationSpec(_Spec):
    """A one-shot operation. The agent runs each id at most once and reports its outcome."""

    id: str = Field(description="Stable operation id")
    kind: Literal["reboot"]
    force: bool = False


class InstanceSpec(_Spec):
    id: str = Field(examples=["i-9f3b1c7d2e4a6b8c0d1e"])
    name: str
    hostname: str
    vcpus: int
    memory_mib: int
    power: PowerState = Field(description="Desired power state")
    stop_timeout_s: int = Field(default=60, description="Graceful shutdown wait before power-off")
    power_serial: int = Field(default=0, description="Starts asked through the API: a new "
                              "value releases the hold of a guest that powered itself off")
    force_stop: bool = Field(default=False, description="Power off at once instead of ACPI shutdown")
    disks: list[DiskSpec]
    nics: list[NicSpec]
    user_data: str | None = Field(default=None, description="The user's user-data, verbatim")
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    operations: list[OperationSpec] = Field(default_factory=list)


class GatewaySpec(_Spec):
    vswitch_id: str
    cidr: str = Field(examples=["10.0.1.0/24"])
    gateway_ip: str = Field(examples=["10.0.1.1"])


class PortSpec(_Spec):
    """A port of the VPC (on this host or another): the router's static neighbour, and
    for remote ports the VXLAN FDB entry that sends its MAC to its host."""

    mac: str = Field(examples=["52:54:00:12:34:56"])
    ip: str = Field(examples=["10.0.1.23"])
    vtep: str | None = Field(default=None, description="Underlay address of the port's host; "
                             "None when the port is on this host")


class EipSpec(_Spec):
    """An elastic IP mapped 1:1 (DNAT in, SNAT out) onto a private address on this host."""

    public_ip: str = Field(examples=["203.0.113.130"])
    private_ip: str = Field(examples=["10.0.1.23"])


class OverlaySpec(_Spec):
    """The VPC's VXLAN device on this host and where its remote ports live."""

    device: str = Field(description="VXLAN device name, <= 15 characters")
    local_vtep: str = Field(description="This host's underlay address", examples=["192.0.2.11"])
    port: int = Field(default=4789, description="UDP destination port")
    remote_vteps: list[str] = Field(default_factory=list,
                                    description="Underlay addresses of the other hosts with a "
                                    "port in the VPC (head-end replication of BUM traffic)")


class UplinkSpec(_Spec):
    """The router namespace's leg toward the host's uplink: outbound NAT and EIPs."""

    veth_host_side: str = Field(description="veth end in the host's namespace")
    veth_router_side: str = Field(description="veth end in the router namespace")
    transit_ip: str = Field(description="Router-side address, unique per VPC on a host; the "
                            "host masquerades it on its uplink", examples=["100.64.3.233"])
    nat_cidrs: list[str] = Field(default_factory=list,
                                 description="vSwitch blocks with outbound NAT (SNAT)")
    eips: list[EipSpec] = Field(default_factory=list)


class NetworkSpec(_Spec):
    """One VPC's presence on this host: a bridge and a router namespace with its gateways."""

    vpc_id: str
    vni: int
    bridge: str
    router_ns: str = Field(description="Name of the router network namespace")
    veth_bridge_side: str = Field(description="Router veth end joined to the bridge")
    veth_router_side: str = Field(description="Router veth end inside the router namespace")
    router_mac: str = Field(description="MAC of the router port on this host")
    mtu: int = 1500
    gateways: list[GatewaySpec]
    overlay: OverlaySpec | None = Field(default=None, description="VXLAN toward other hosts")
    ports: list[PortSpec] = Field(default_factory=list,
                                  description="Every port of the VPC, local and remote")
    uplink: UplinkSpec | None = Field(default=None, description="Outbound NAT and EIPs")


class HostDiskSpec(_Spec):
    """A data disk held on this host, attached or not: ``<state>/disks/<id>.qcow2``.

    Attached ones also appear in their instance's ``disks``. The file grows to
    ``size_bytes`` (online when attached to a running guest); it never shrinks.
    """

    id: str = Field(examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    size_bytes: int
    source_snapshot_id: str | None = Field(
        default=None, description="Create the disk as a full copy of this snapshot")
    source_disk_id: str | None = Field(
        default=None, description="The disk (or retained file) on this host holding that snapshot")
    source_image: ImageSpec | None = Field(
        default=None, description="When the snapshot is held on another host: its flattened "
        "copy in the controller's store, to download (sha256 verified) as the new disk")


class SnapshotSpec(_Spec):
    """A snapshot that must exist on this host: a qcow2 internal snapshot of ``disk_id``'s file.

    ``progressing``: take it now if the file does not have it yet (the snapshot id
    is its name, so it is never taken twice). ``accomplished``: it exists; if it is
    missing the agent reports that and never re-takes it. Internal snapshots named
    like a snapshot id that are not listed here are deleted.
    """

    id: str = Field(examples=["s-7d1c3b5a9e2f4d6c8b0a"])
    disk_id: str
    state: Literal["progressing", "accomplished"] = "accomplished"


class StorageOperationSpec(_Spec):
    """A one-shot storage operation; run at most once (recorded like ``OperationSpec``)."""

    id: str
    kind: Literal["reset_disk", "export_snapshot", "reinit_disk"]
    disk_id: str = Field(description="The disk (reset, reinit) or the file holding the snapshot "
                         "(export)")
    snapshot_id: str
    upload_url: str | None = Field(
        default=None, description="export_snapshot: where to PUT the flattened qcow2")


class MigrationDiskSpec(_Spec):
    """A disk file a cold migration moves (through the controller's store)."""

    id: str = Field(examples=["d-2b7c9e1f0a3d5c6b8e9f"])
    role: Literal["system", "data"] = "system"
    image_id: str | None = Field(default=None, description="Backing image of a system disk")
    url: str = Field(description="Source: where to PUT the file; target: where to GET it "
                     "(relative to the controller URL)")
    sha256: str | None = Field(default=None, description="Target: the digest the file must have")


class MigrationSpec(_Spec):
    """A one-shot move of an instance between hosts (docs/agent-api.md, "Migration").

    ``role`` says what this host does. ``source`` (live and cold): leave the
    instance's domain alone — never define, start, resume, stop or remove it —
    while the migration is in the spec; cold: upload each disk to its ``url``.
    ``target``: live — prepare the instance like any other of the spec (image,
    disks, seed, taps, firewall), but instead of defining and starting it, pull
    the running domain from ``peer_address``'s libvirtd (live, storage copied);
    cold — download each disk into staging, verify its sha256, and keep it for
    when the instance arrives in the spec. Run at most once; outcome reported in
    ``HostReport.migrations``.
    """

    id: str = Field(examples=["mig-3k9d8f7g6h5j4k3l2m1n"])
    instance_id: str
    kind: Literal["live", "cold"]
    role: Literal["source", "target"]
    peer_address: str = Field(description="Underlay address of the other host",
                              examples=["192.0.2.12"])
    disks: list[MigrationDiskSpec] = Field(default_factory=list, description="Cold: the files")
    run: bool = Field(default=True, description="Target of a live migration: False while the "
                      "source has not yet confirmed it holds the instance still (prepare only)")
    cancel: bool = Field(default=False, description="Target of a live migration: the operator "
                         "cancelled it — abort the copy if it runs, never start it, and report "
                         "failure (or success if the switch-over happened first)")


class HostSpec(_Spec):
    schema_version: int = SCHEMA_VERSION
    host_id: str
    generation: int = Field(description="Bumped on every desired change that touches this host")
    instances: list[InstanceSpec] = Field(default_factory=list)
    networks: list[NetworkSpec] = Field(default_factory=list)
    images: list[ImageSpec] = Field(default_factory=list)
    disks: list[HostDiskSpec] = Field(default_factory=list)
    snapshots: list[SnapshotSpec] = Field(default_factory=list)
    storage_operations: list[StorageOperationSpec] = Field(default_factory=list)
    address_sets: list[AddressSetSpec] = Field(
        default_factory=list, description="Member IPs of the groups this host's rules name")
    migrations: list[MigrationSpec] = Field(
        default_factory=list, description="Instances moving to or from this host")


# ---- what the agent sends back -------------------------------------------------

ObservedPower = Literal["running", "stopped", "shutting_down", "missing", "error"]


class OperationResult(_Spec):
    id: str
    ok: bool
    message: str = ""


class InstanceObserved(_Spec):
    id: str
    power: ObservedPower
    error: str | None = Field(default=None, description="Last reconcile error for this instance")
    retryable: bool = True
    retries: int = 0
    domain_uuid: str | None = None
    stopped_by_guest: int | None = Field(
        default=None, description="Its guest OS powered itself off while it should run: the "
        "spec's power_serial then; the agent holds it stopped until the spec says stopped "
        "or carries another serial (a new start)")


class HostCapacity(_Spec):
    vcpus: int
    memory_mib: int
    disk_gib: int


class HostRegistration(_Spec):
    """Sent once by an agent with its enrolment token; answered with ``HostEnrolled``."""

    name: str = Field(examples=["hv-01"])
    zone: str = Field(examples=["zone-a"])
    underlay_address: str = Field(examples=["192.0.2.11"])
    virt_type: Literal["kvm", "qemu"]
    capacity: HostCapacity
    agent_version: str = "0.1.0"


class HostEnrolled(_Spec):
    host_id: str
    host_token: str = Field(description="Bearer token for this host's agent endpoints, shown once")


class DiskObserved(_Spec):
    """A disk file on the host (data disks, system disks and retained snapshot holders)."""

    id: str
    exists: bool = True
    size_bytes: int = 0
    attached_to: str | None = Field(default=None, description="Instance whose domain has it")
    chain_depth: int = Field(default=1, description="Files in its backing chain, itself included")
    snapshot_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    failed: bool = Field(default=False, description="The disk could not be made on this host "
                         "(e.g. its storage is full) and is not retried; ``error`` says why")


class SnapshotObserved(_Spec):
    id: str
    state: Literal["progressing", "accomplished", "failed", "missing"]
    message: str = ""


class HostReport(_Spec):
    schema_version: int = SCHEMA_VERSION
    host_id: str
    generation_applied: int = Field(description="Generation of the last spec fully converged; -1 if none")
    generation_seen: int
    instances: list[InstanceObserved] = Field(default_factory=list)
    operations: list[OperationResult] = Field(default_factory=list)
    capacity: HostCapacity | None = None
    errors: list[str] = Field(default_factory=list, description="Host-level reconcile errors")
    disks: list[DiskObserved] = Field(default_factory=list)
    snapshots: list[SnapshotObserved] = Field(default_factory=list)
    storage_operations: list[OperationResult] = Field(default_factory=list)
    rule_hits: dict[str, int] | None = Field(
        default=None, description="Packets matched per security-group rule id (None: not read)")
    migrations: list[OperationResult] = Field(
        default_factory=list, description="Outcomes of the spec's migrations (by migration id)")
