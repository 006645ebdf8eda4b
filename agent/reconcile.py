"""One level-triggered reconcile pass: networks → images → disks/seeds → domains → cleanup.

Every pass compares the whole spec with what netlink, the state directory and
libvirt show, and fixes the difference. Errors are caught per instance (one
bad instance never blocks the others), counted, and retried with a backoff;
an error that says "give up" waits for a new spec generation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from agent import faults
from agent.compute import (ACTIVE_STATES, ComputeApplier, DomainObserved, RenderedDomain,
                           guest_stopped, observe_domains, plan_compute)
from agent.domain_xml import DomainPaths, domain_config_hash, render_domain_xml
from agent.disks import DiskReconciler, data_disk_path
from agent.errors import AgentError, TemporaryError
from agent.firewall import FirewallReconciler
from agent.libvirt_conn import LibvirtConnection
from agent.migration import MigrationRunner
from agent.dhcp import DhcpReconciler
from agent.network import REMOVALS, NetworkReconciler, observe_taps, plan_network, plan_taps
from agent.overlay import OverlayReconciler, RemoveArpGuard, plan_overlay
from agent.uplink import UplinkReconciler
from agent.records import GuestPower, OperationLog, Shutdown, ShutdownRecords
from agent.spec import (HostCapacity, HostReport, HostSpec, InstanceObserved, InstanceSpec,
                        OperationResult)
from agent.state import StateDir
from agent.storage import (CreateDisk, Downloader, FetchImage, RemoveInstanceFiles,
                           StorageApplier, WriteSeed, observe_storage, plan_storage)

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


@dataclass
class Failure:
    count: int
    message: str
    retryable: bool
    next_at: float
    generation: int


class Reconciler:
    def __init__(self, state: StateDir, conn: LibvirtConnection, *, virt_type: str,
                 disk_cache: str, netns_dir: Path, download: Downloader,
                 capacity: HostCapacity | None = None,
                 uplink_interface: str | None = None) -> None:
        self.state = state
        self.conn = conn
        self.virt_type = virt_type
        self.disk_cache = disk_cache
        self.capacity = capacity
        self.network = NetworkReconciler(netns_dir)
        self.firewall = FirewallReconciler()
        self.overlay = OverlayReconciler(self.network.ns_path)
        self.uplink = UplinkReconciler(self.network.ns_path, uplink_interface,
                                       state.root / "uplink.json")
        self.dhcp = DhcpReconciler(self.network.ns_path, state.root / "dhcp")
        self.storage = StorageApplier(state, download)
        self.shutdowns = ShutdownRecords(state.compute_json)
        self.guest_power = GuestPower(state.guest_power_json)
        self.oplog = OperationLog(state.operations_json)
        self.compute = ComputeApplier(conn, self.shutdowns, self.oplog)
        self.disks = DiskReconciler(state, conn, self.oplog)
        self.migrations = MigrationRunner(state, conn, self.oplog, self.storage)
        self.failures: dict[str, Failure] = {}
        self.generation_applied = -1
        self.timings: dict[str, float] = {}  # seconds per phase of the last pass
        self._rendered: dict[str, tuple[tuple, RenderedDomain]] = {}  # iid -> (key, domain)

    # -- helpers ---------------------------------------------------------------

    def render(self, inst: InstanceSpec, generation: int) -> RenderedDomain:
        """The domain of ``inst``; rendered once per distinct spec and generation."""
        key = (inst.model_dump_json(), generation, self.virt_type, self.disk_cache)
        hit = self._rendered.get(inst.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        rendered = self._render(inst, generation)
        self._rendered[inst.id] = (key, rendered)
        return rendered

    def _render(self, inst: InstanceSpec, generation: int) -> RenderedDomain:
        paths = DomainPaths({d.id: self.state.disk_path(inst.id, d.id) if d.role == "system"
                             else data_disk_path(self.state, d.id) for d in inst.disks},
                            self.state.seed_path(inst.id), self.state.console_path(inst.id))
        config_hash = domain_config_hash(inst, paths, self.virt_type,  # type: ignore[arg-type]
                                         disk_cache=self.disk_cache)  # type: ignore[arg-type]
        return RenderedDomain(lambda: render_domain_xml(
            inst, paths, self.virt_type, disk_cache=self.disk_cache,  # type: ignore[arg-type]
            generation=generation, config_hash=config_hash), config_hash)

    def _fail(self, errors: dict[str, AgentError], iid: str, exc: AgentError) -> None:
        if iid not in errors:
            errors[iid] = exc

    def _deferred(self, iid: str, generation: int, now: float) -> bool:
        f = self.failures.get(iid)
        return f is not None and f.generation == generation and now < f.next_at

    def _record_outcomes(self, spec: HostSpec, errors: dict[str, AgentError], attempted: set[str],
                         now: float) -> None:
        for iid in attempted:
            exc = errors.get(iid)
            if exc is None:
                self.failures.pop(iid, None)
                continue
            prev = self.failures.get(iid)
            count = (prev.count if prev else 0) + 1
            delay = min(MAX_BACKOFF_S, 2.0 ** (count - 1)) if exc.retryable else float("inf")
            if prev is None or prev.message != str(exc):
                log.warning("instance %s: %s (%s, attempt %d)", iid, exc,
                            "will retry" if exc.retryable else "gives up until the spec changes",
                            count)
            self.failures[iid] = Failure(count, str(exc), exc.retryable, now + delay, spec.generation)
        for iid in list(self.failures):
            if iid not in {i.id for i in spec.instances}:
                del self.failures[iid]

    # -- the pass --------------------------------------------------------------

    def run_pass(self, spec: HostSpec) -> HostReport:
        now = time.time()
        errors: dict[str, AgentError] = {}
        host_errors: list[str] = []
        deferred = {i.id for i in spec.instances if self._deferred(i.id, spec.generation, now)}
        active = [i for i in spec.instances if i.id not in deferred]
        attempted = {i.id for i in active}
        self.timings = {}
        mark = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal mark
            t = time.perf_counter()
            self.timings[phase] = t - mark
            mark = t


        # 1. networks (creation and repair; removals wait until the domains are gone)
        net_removals = []
        try:
            net_acts = plan_network(spec.networks, self.network.observe(spec.networks))
            for a in net_acts:
                if isinstance(a, REMOVALS):
                    net_removals.append(a)
                    continue
                try:
                    self.network.apply(a)
                except AgentError as exc:
                    host_errors.append(str(exc))
        except AgentError as exc:
            host_errors.append(f"network: {exc}")
        net_removals += self._overlay_and_uplink(spec, host_errors)

        lap("network")
        # 1b. security groups (before the domains, so a new tap is filtered from its first frame)
        host_errors.extend(self.firewall.sync([n for i in spec.instances for n in i.nics],
                                              spec.address_sets))

        lap("firewall")
        # 2. images, disks and seeds (disks received by a cold migration are moved in first)
        try:
            self.migrations.adopt_staged(spec)
        except OSError as exc:
            host_errors.append(f"migration: {exc}")
        try:
            sobs = observe_storage(self.state, self.storage.seed_facts)
            sacts, blocked = plan_storage(spec, sobs, busy=set(sobs.instance_files))
            self.storage.remember_seeds(spec, sobs)
            for iid, why in blocked.items():
                self._fail(errors, iid, TemporaryError(why))
            for a in sacts:
                if isinstance(a, FetchImage):
                    users = [i for i in a.instance_ids if i not in deferred]
                    if not users:
                        continue
                    try:
                        faults.point("storage.before_fetch_image")
                        self.storage.apply(a)
                        faults.point("storage.after_fetch_image")
                    except AgentError as exc:
                        for iid in users:
                            self._fail(errors, iid, exc)
                elif isinstance(a, (CreateDisk, WriteSeed)):
                    if a.instance_id in deferred or a.instance_id in errors:
                        continue
                    step = "create_disk" if isinstance(a, CreateDisk) else "write_seed"
                    try:
                        faults.point(f"storage.before_{step}")
                        self.storage.apply(a)
                        faults.point(f"storage.after_{step}")
                    except AgentError as exc:
                        self._fail(errors, a.instance_id, exc)
        except (AgentError, OSError) as exc:
            host_errors.append(f"storage: {exc}")
            for i in active:
                self._fail(errors, i.id, TemporaryError(f"storage: {exc}"))

        lap("storage")
        # 2b. data disks, snapshots, rollbacks, resizes (agent/disks.py)
        faults.point("storage.before_disk_pass")
        try:
            self.disks.before_domains(spec, host_errors)
        except Exception as exc:  # noqa: BLE001 - one bad disk never stops the pass
            log.exception("disk pass failed")
            host_errors.append(f"disks: {exc}")

        lap("disks")
        # 2c. migrations (agent/migration.py): a live one pulls its domain here
        self.migrations.run(spec, lambda i: self.render(i, spec.generation).xml, host_errors)
        held = self.migrations.held(spec)
        lap("migrations")

        # 3. domains
        observed: dict[str, DomainObserved] | None = None
        libvirt_error: str | None = None
        try:
            observed = observe_domains(self.conn.get())
            rendered = {}
            for inst in active:
                if inst.id in errors:
                    continue
                try:
                    rendered[inst.id] = self.render(inst, spec.generation)
                except (KeyError, ValueError) as exc:
                    self._fail(errors, inst.id, TemporaryError(f"render: {exc}", retryable=False))
            faults.point("compute.rendered")
            skip = deferred | set(errors)
            instances = [i for i in spec.instances if i.id not in held]
            rendered = {k: v for k, v in rendered.items() if k not in skip}
            unheld = {k: v for k, v in observed.items() if k not in held}
            shutdowns = self.shutdowns.snapshot()
            for a in plan_compute(instances, rendered, unheld, shutdowns,
                                  self.oplog.completed_ids(), now, self.guest_power):
                try:
                    self.compute.apply(a)
                except AgentError as exc:
                    if a.instance_id in attempted:
                        self._fail(errors, a.instance_id, exc)
                    else:
                        host_errors.append(str(exc))
            observed = observe_domains(self.conn.get())
            self._track_guest_power(spec, instances, observed, shutdowns)
        except AgentError as exc:
            libvirt_error = str(exc)
            host_errors.append(f"libvirt: {exc}")
        except Exception as exc:  # libvirtError from observe
            libvirt_error = str(exc)
            host_errors.append(f"libvirt: {exc}")
            self.conn.invalidate()

        lap("domains")
        # 3b. hot plug: running guests get the data disks of their spec
        if observed is not None:
            try:
                self.disks.after_domains(spec, lambda i: self.render(i, spec.generation).xml,
                                         host_errors)
            except Exception as exc:  # noqa: BLE001
                log.exception("disk hot-plug pass failed")
                host_errors.append(f"disks: {exc}")

        lap("hotplug")
        # 4. cleanup: files of instances whose domain is gone, then networks
        if observed is not None:
            try:
                self.disks.cleanup(spec, host_errors)
            except Exception as exc:  # noqa: BLE001
                host_errors.append(f"disk cleanup: {exc}")
            try:
                sobs = observe_storage(self.state, self.storage.seed_facts)
                sacts, _ = plan_storage(spec, sobs, busy=set(observed))
                for a in sacts:
                    if isinstance(a, RemoveInstanceFiles):
                        try:
                            faults.point("storage.before_remove_instance_files")
                            self.storage.apply(a)
                            faults.point("storage.after_remove_instance_files")
                        except AgentError as exc:
                            host_errors.append(str(exc))
            except OSError as exc:
                host_errors.append(f"storage cleanup: {exc}")
            for a in net_removals:
                try:
                    (self.overlay if isinstance(a, RemoveArpGuard) else self.network).apply(a)
                except AgentError as exc:
                    host_errors.append(str(exc))

        self.migrations.cleanup(spec)
        for iid in set(self._rendered) - {i.id for i in spec.instances}:
            del self._rendered[iid]
        lap("cleanup")
        faults.point("reconcile.before_report")
        self._record_outcomes(spec, errors, attempted, now)
        self.oplog.prune({op.id for i in spec.instances for op in i.operations}
                         | {op.id for op in spec.storage_operations})
        if not host_errors and not self.failures:
            self.generation_applied = spec.generation
        report = self.report(spec, observed, libvirt_error, host_errors)
        report = report.model_copy(update={"migrations": self.migrations.results(spec)})
        try:
            return report.model_copy(update=self.disks.report_fields(spec))
        except Exception:  # noqa: BLE001 - the instance report still goes out
            log.exception("disk report failed")
            return report
        finally:
            lap("disk_report")

    def _overlay_and_uplink(self, spec: HostSpec, host_errors: list[str]) -> list:
        """VXLAN, FDB, router neighbours, NAT and EIPs; returns removals to run last."""
        later = []
        try:
            nics = [n for i in spec.instances for n in i.nics]
            for a in plan_taps(nics, observe_taps(nics)):
                try:
                    self.network.apply(a)
                except AgentError as exc:
                    host_errors.append(str(exc))
            routers = self.network.live_routers()
            for a in plan_overlay(spec.networks, self.overlay.observe(spec.networks, routers),
                                  routers):
                if isinstance(a, RemoveArpGuard):
                    later.append(a)
                    continue
                try:
                    self.overlay.apply(a)
                except AgentError as exc:
                    host_errors.append(str(exc))
            host_errors.extend(self.uplink.reconcile(spec.networks, routers))
            host_errors.extend(self.dhcp.reconcile(spec.networks, routers))
        except AgentError as exc:
            host_errors.append(f"overlay: {exc}")
        return later

    def _track_guest_power(self, spec: HostSpec, instances: list[InstanceSpec],
                           observed: dict[str, DomainObserved],
                           shutdowns: dict[str, Shutdown]) -> None:
        """After the domain pass: which instances run under a running spec, and which
        of those their guest powered off (``GuestPower``). Instances held by a migration
        keep what they had; those gone from the spec or asked to stop are forgotten. A
        domain the agent had asked to shut down (``shutdowns`` as the pass began: a start
        right after a stop) is not counted running yet: its coming shutdown is the
        agent's own."""
        g = self.guest_power
        planned = {i.id for i in instances}
        others = [i.id for i in spec.instances if i.id not in planned]
        running = {i: g.running[i] for i in others if i in g.running}
        stopped = {i: g.stopped[i] for i in others if i in g.stopped}
        for inst in instances:
            dom = observed.get(inst.id)
            if inst.power != "running" or dom is None:
                continue
            if dom.state in ACTIVE_STATES:
                if inst.id not in shutdowns:
                    running[inst.id] = inst.power_serial
            elif guest_stopped(inst, dom, shutdowns.get(inst.id), g):
                running[inst.id] = stopped[inst.id] = inst.power_serial
                if inst.id not in g.stopped:
                    log.info("instance %s: its guest powered itself off; held stopped",
                             inst.id)
        g.update(running, stopped)

    def _stopped_by_guest(self, inst: InstanceSpec) -> int | None:
        serial = self.guest_power.stopped.get(inst.id)
        return serial if inst.power == "running" and serial == inst.power_serial else None

    def report(self, spec: HostSpec, observed: dict[str, DomainObserved] | None,
               libvirt_error: str | None, host_errors: list[str]) -> HostReport:
        items = []
        ops = []
        for inst in spec.instances:
            f = self.failures.get(inst.id)
            dom = observed.get(inst.id) if observed is not None else None
            if observed is None:
                power = "error"
            elif dom is None:
                power = "missing"
            elif dom.state in ("running", "paused", "other"):
                power = "shutting_down" if (inst.power == "stopped" and
                                            self.shutdowns.get(inst.id)) else "running"
            else:
                power = dom.state
            err = f.message if f else (libvirt_error if observed is None else None)
            items.append(InstanceObserved(
                id=inst.id, power=power, error=err, retryable=f.retryable if f else True,
                retries=f.count if f else 0, domain_uuid=dom.uuid if dom else None,
                stopped_by_guest=self._stopped_by_guest(inst)))
            for op in inst.operations:
                out = self.oplog.outcome(op.id)
                if out is not None:
                    ops.append(OperationResult(id=op.id, ok=out.ok, message=out.message))
        return HostReport(host_id=spec.host_id, generation_applied=self.generation_applied,
                          generation_seen=spec.generation, instances=items, operations=ops,
                          capacity=self.capacity, errors=host_errors[:50],
                          rule_hits=self.firewall.rule_hits)
