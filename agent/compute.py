"""Compute: libvirt domains for the spec's instances — observe, plan (pure), apply.

Only domains marked with miniecs metadata are ever looked at; every other
domain on the host is invisible to this module. A running marked domain is
adopted as it is after an agent restart: it is redefined only when the
``config-hash`` of its persistent XML differs from the one rendered now, and
a redefinition never restarts a running guest (the new definition applies at
its next cold start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import libvirt

from agent import faults
from agent.domain_xml import parse_mark
from agent.errors import AgentError, PermanentError, TemporaryError
from agent.libvirt_conn import LibvirtConnection
from agent.records import GuestPower, OperationLog, Shutdown, ShutdownRecords
from agent.spec import METADATA_NS, InstanceSpec

log = logging.getLogger(__name__)

ACPI_RESEND_S = 5.0  # a guest still booting may miss the first power-button press

DomainState = Literal["running", "paused", "shutting_down", "stopped", "other"]


@dataclass(frozen=True)
class DomainObserved:
    instance_id: str
    state: DomainState
    config_hash: str
    uuid: str = ""
    dom_id: int = -1
    # stopped by a shutdown (the guest's own poweroff, or an ACPI request), not
    # destroyed, crashed, migrated away or unknown (as after a libvirtd restart)
    shut_down: bool = False


class RenderedDomain:
    """An instance's domain: its ``config-hash``, and its XML — made when first asked for
    (``xml`` may be a function), since adopting a domain that is as it should be needs
    only the hash."""

    __slots__ = ("_xml", "config_hash")

    def __init__(self, xml: str | Callable[[], str], config_hash: str) -> None:
        self._xml = xml
        self.config_hash = config_hash

    @property
    def xml(self) -> str:
        if callable(self._xml):
            self._xml = self._xml()
        return self._xml


# ---- actions -------------------------------------------------------------------

@dataclass(frozen=True)
class Define:
    instance_id: str
    xml: str


@dataclass(frozen=True)
class Start:
    instance_id: str


@dataclass(frozen=True)
class Resume:
    instance_id: str


@dataclass(frozen=True)
class AcpiShutdown:
    """ACPI power button (graceful stop)."""

    instance_id: str


@dataclass(frozen=True)
class PowerOff:
    instance_id: str
    reason: str


@dataclass(frozen=True)
class Reboot:
    instance_id: str
    operation_id: str
    force: bool


@dataclass(frozen=True)
class FinishOperation:
    instance_id: str
    operation_id: str
    ok: bool
    message: str


@dataclass(frozen=True)
class ForgetShutdown:
    instance_id: str


@dataclass(frozen=True)
class Remove:
    """Destroy and undefine a marked domain whose instance left the spec."""

    instance_id: str


ComputeAction = (Define | Start | Resume | AcpiShutdown | PowerOff | Reboot | FinishOperation
                 | ForgetShutdown | Remove)

ACTIVE_STATES: tuple[DomainState, ...] = ("running", "paused", "shutting_down", "other")


# ---- plan ----------------------------------------------------------------------

def guest_stopped(inst: InstanceSpec, dom: DomainObserved | None, shutdown: Shutdown | None,
                  guest: GuestPower | None) -> bool:
    """Whether the instance's guest powered itself off while its spec said running
    (``GuestPower``): then it is held stopped, not started again."""
    if guest is None or inst.power != "running" or dom is None or dom.state in ACTIVE_STATES:
        return False
    return guest.stopped.get(inst.id) == inst.power_serial or (
        guest.running.get(inst.id) == inst.power_serial and dom.shut_down and shutdown is None)


def plan_instance(inst: InstanceSpec, rendered: RenderedDomain, dom: DomainObserved | None,
                  shutdown: Shutdown | None, completed_ops: set[str], now: float,
                  guest: GuestPower | None = None) -> list[ComputeAction]:
    """Actions for one instance of the spec."""
    iid = inst.id
    acts: list[ComputeAction] = []
    if dom is None or dom.config_hash != rendered.config_hash:
        acts.append(Define(iid, rendered.xml))
    is_running = dom is not None and dom.state in ACTIVE_STATES
    if inst.power == "running":
        if shutdown is not None:
            acts.append(ForgetShutdown(iid))
        if not is_running and not guest_stopped(inst, dom, shutdown, guest):
            acts.append(Start(iid))
        elif dom is not None and dom.state == "paused":
            acts.append(Resume(iid))
    else:
        if not is_running:
            if shutdown is not None:
                acts.append(ForgetShutdown(iid))
        elif inst.force_stop:
            acts.append(PowerOff(iid, "forced stop"))
        elif shutdown is None:
            acts.append(AcpiShutdown(iid))
        elif now - shutdown.started_at >= inst.stop_timeout_s:
            acts.append(PowerOff(iid, f"no shutdown after {inst.stop_timeout_s}s"))
        elif now - shutdown.last_sent_at >= ACPI_RESEND_S:
            acts.append(AcpiShutdown(iid))
    for op in inst.operations:
        if op.id in completed_ops:
            continue
        if op.kind != "reboot":
            acts.append(FinishOperation(iid, op.id, False, f"unknown operation kind {op.kind!r}"))
        elif is_running and inst.power == "running":
            acts.append(Reboot(iid, op.id, op.force))
        elif inst.power == "running" and guest_stopped(inst, dom, shutdown, guest):
            acts.append(FinishOperation(iid, op.id, False, "the guest powered itself off"))
        elif inst.power == "running":
            acts.append(FinishOperation(iid, op.id, True, "instance was not running; started"))
        else:
            acts.append(FinishOperation(iid, op.id, False, "instance is stopped"))
    return acts


def plan_compute(instances: list[InstanceSpec], rendered: dict[str, RenderedDomain],
                 observed: dict[str, DomainObserved], shutdowns: dict[str, Shutdown],
                 completed_ops: set[str], now: float,
                 guest: GuestPower | None = None) -> list[ComputeAction]:
    """Actions that make libvirt match the spec.

    Instances of the spec missing from ``rendered`` (their disks or seed are not
    ready) are left alone this pass — neither started nor removed. Marked
    domains of instances not in the spec are removed.
    """
    acts: list[ComputeAction] = []
    for inst in instances:
        if inst.id in rendered:
            acts += plan_instance(inst, rendered[inst.id], observed.get(inst.id),
                                  shutdowns.get(inst.id), completed_ops, now, guest)
    wanted = {i.id for i in instances}
    for iid in sorted(observed):
        if iid not in wanted:
            acts.append(Remove(iid))
    for iid in sorted(shutdowns):
        if iid not in wanted and iid not in observed:
            acts.append(ForgetShutdown(iid))
    return acts


# ---- observe -------------------------------------------------------------------

def _state_of(code: int) -> DomainState:
    if code in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return "running"
    if code == libvirt.VIR_DOMAIN_PAUSED:
        return "paused"
    if code == libvirt.VIR_DOMAIN_SHUTDOWN:
        return "shutting_down"
    if code in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
        return "stopped"
    return "other"


def libvirt_error(exc: libvirt.libvirtError, what: str) -> AgentError:
    """Map a libvirt error to retry-or-give-up."""
    code = exc.get_error_code()
    permanent = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                 libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT,
                 getattr(libvirt, "VIR_ERR_XML_INVALID_SCHEMA", -1)}
    cls = PermanentError if code in permanent else TemporaryError
    return cls(f"{what}: {exc.get_error_message() or exc}")


def read_mark(dom: libvirt.virDomain, persistent: bool | None = None):
    """The miniecs mark of a domain's persistent definition, or None when it is not ours."""
    if persistent is None:
        persistent = bool(dom.isPersistent())
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else libvirt.VIR_DOMAIN_AFFECT_LIVE
    try:
        md = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN):
            return None
        raise
    return parse_mark(md)


def _states(conn: libvirt.virConnect) -> dict[str, tuple[int, int]]:
    """Every domain's state and reason codes by name, in one call (empty when the
    driver has no stats)."""
    try:
        return {dom.name(): (int(stats["state.state"]), int(stats.get("state.reason", 0)))
                for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
                if "state.state" in stats}
    except (libvirt.libvirtError, AttributeError, TypeError, ValueError):
        return {}


def observe_domains(conn: libvirt.virConnect) -> dict[str, DomainObserved]:
    """Marked domains by instance id (domains without our mark are skipped).

    One call lists the transient domains, one the states of all; then each domain
    costs one call, for its mark (name, UUID and id come with the listing).
    """
    out: dict[str, DomainObserved] = {}
    domains = conn.listAllDomains()
    # listed after: a domain persisted meanwhile (an incoming migration) counts as such
    transient = {d.name() for d in
                 conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)}
    states = _states(conn)
    for dom in domains:
        try:
            name = dom.name()
            try:
                mark = read_mark(dom, persistent=name not in transient)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                mark = read_mark(dom)  # its persistence changed since the listing: ask
            if mark is None or mark.instance_id != name:
                continue
            code, reason = states.get(name) or dom.state()[:2]  # or defined since
            out[mark.instance_id] = DomainObserved(
                mark.instance_id, _state_of(code), mark.config_hash,
                dom.UUIDString(), dom.ID(),
                shut_down=(code == libvirt.VIR_DOMAIN_SHUTOFF
                           and reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # vanished while we looked
            raise
    return out


# ---- apply ---------------------------------------------------------------------

class ComputeApplier:
    def __init__(self, conn: LibvirtConnection, shutdowns: ShutdownRecords, oplog: OperationLog) -> None:
        self.conn = conn
        self.shutdowns = shutdowns
        self.oplog = oplog

    def _dom(self, iid: str) -> libvirt.virDomain:
        return self.conn.get().lookupByName(iid)

    def apply(self, a: ComputeAction) -> None:
        try:
            self._apply(a)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC,
                                        libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INTERNAL_ERROR):
                self.conn.invalidate()
            raise libvirt_error(exc, f"{type(a).__name__.rstrip('_').lower()} {a.instance_id}") from None

    def _apply(self, a: ComputeAction) -> None:
        iid = a.instance_id
        if isinstance(a, Define):
            faults.point("compute.before_define")
            self.conn.get().defineXML(a.xml)
            faults.point("compute.after_define")
            log.info("defined domain %s", iid)
        elif isinstance(a, Start):
            dom = self._dom(iid)
            if not dom.isActive():
                t0 = time.monotonic()
                faults.point("compute.before_start")
                dom.create()
                faults.point("compute.after_start")
                log.info("started domain %s (%.2fs)", iid, time.monotonic() - t0)
        elif isinstance(a, Resume):
            self._dom(iid).resume()
            log.info("resumed domain %s", iid)
        elif isinstance(a, AcpiShutdown):
            dom = self._dom(iid)
            first = self.shutdowns.get(iid) is None
            self.shutdowns.sent(iid)
            faults.point("compute.shutdown_recorded")
            if dom.isActive():
                dom.shutdown()
                faults.point("compute.after_acpi_shutdown")
            log.info("%s ACPI shutdown of %s", "sent" if first else "re-sent", iid)
        elif isinstance(a, PowerOff):
            dom = self._dom(iid)
            if dom.isActive():
                dom.destroy()
                faults.point("compute.after_power_off")
            self.shutdowns.forget(iid)
            log.info("powered off %s (%s)", iid, a.reason)
        elif isinstance(a, Reboot):
            dom = self._dom(iid)
            if a.force:
                dom.reset(0)
            else:
                dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
            self.oplog.record(a.operation_id, iid, True, "reset" if a.force else "rebooted")
            log.info("%s %s (operation %s)", "reset" if a.force else "rebooted", iid, a.operation_id)
        elif isinstance(a, FinishOperation):
            self.oplog.record(a.operation_id, iid, a.ok, a.message)
        elif isinstance(a, ForgetShutdown):
            self.shutdowns.forget(iid)
        elif isinstance(a, Remove):
            self.remove(iid)
        else:  # pragma: no cover
            raise TypeError(a)

    def remove(self, iid: str) -> None:
        """Destroy and undefine a domain — only when it carries our mark."""
        try:
            dom = self._dom(iid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise
        mark = read_mark(dom)
        if mark is None or mark.instance_id != iid:
            raise PermanentError(f"domain {iid} is not marked as miniecs's; left alone")
        if dom.isActive():
            dom.destroy()
            faults.point("compute.remove.after_destroy")
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            faults.point("compute.remove.after_undefine")
        self.shutdowns.forget(iid)
        log.info("removed domain %s", iid)
