"""Migrations on a hypervisor: the agent's side of ``HostSpec.migrations``.

Roles (docs/agent-api.md, "Migration"):

* **source** (live and cold): the instance stays in the spec but the compute
  reconciler leaves its domain alone (``held``) — it never starts, resumes,
  stops, redefines or removes it, so a domain that left by live migration is
  never "repaired" back. Cold: upload each disk file (qcow2 with its internal
  snapshots) to the controller, which checks its sha256.
* **target, live**: the instance is in the spec like any other, so the usual
  passes prepare it — image cached, an empty qcow2 overlay on it as the system
  disk, empty data disks of the right size, seed, bridge/VXLAN, taps' firewall
  rules — but compute does not define or start it. When ``run`` is true this
  module pulls the running domain from the source's libvirtd: a peer-to-peer
  live migration with storage copy of the top layers
  (``VIR_MIGRATE_NON_SHARED_INC``; the image is the same file on both hosts),
  with the destination XML rendered here (this host's paths), defined
  persistently here and undefined on the source.
* **target, cold**: download each disk into ``<state>/migrating/<id>/``, check
  its sha256, repoint a system disk's backing file at this host's copy of the
  image; the files are adopted (moved into place) when the instance arrives in
  the spec, before the storage pass would create empty disks.

Each migration runs at most once (``OperationLog``); temporary failures are
retried a few times, then reported failed.

Cancel: a cold migration leaves both hosts' specs; a transfer still running
sees that (``latest_spec``, updated by the spec poller while the pass runs)
between chunks and stops; the target's staged files go with its staging
directory. A live one stays in the target's spec with ``cancel``: a pull
that runs is aborted (``abortJob``: the guest keeps running on the source,
libvirt drops the incoming copy), one that has not started never starts, and
the target reports failure — or success when the switch-over came first. The libvirt transport between
hosts is ``migration_uri`` in the agent's configuration (``{address}`` is a
host's underlay address): qemu+tls in production, qemu+tcp only on a closed
test underlay.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

from agent import proc
from agent.disks import data_disk_path
from agent.errors import AgentError, Cancelled, PermanentError, TemporaryError
from agent.libvirt_conn import LibvirtConnection
from agent.records import OperationLog
from agent.spec import HostSpec, InstanceSpec, MigrationSpec, OperationResult
from agent.state import StateDir, safe_id
from agent.storage import StorageApplier, sha256_file

log = logging.getLogger(__name__)

TRIES = 3  # a migration failing this often (temporary errors) is reported failed
LIVE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
              | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
              | libvirt.VIR_MIGRATE_NON_SHARED_INC | libvirt.VIR_MIGRATE_AUTO_CONVERGE)


def staging_dir(state: StateDir) -> Path:
    return state.root / "migrating"


def disk_file(state: StateDir, instance_id: str, disk_id: str, role: str) -> Path:
    return (state.disk_path(instance_id, disk_id) if role == "system"
            else data_disk_path(state, disk_id))


class MigrationRunner:
    def __init__(self, state: StateDir, conn: LibvirtConnection, oplog: OperationLog,
                 storage: StorageApplier) -> None:
        self.state = state
        self.conn = conn
        self.oplog = oplog
        self.storage = storage
        self.uri_template = "qemu+tls://{address}/system"
        self.address = ""
        self.timeout_s = 600.0
        self.upload: Callable[..., None] | None = None  # (url, path, stop=callable)
        self.download: Callable[..., None] | None = None  # (url, part, stop=callable)
        self.latest_spec: Callable[[], HostSpec | None] = lambda: None
        self.cancel_poll_s = 0.5
        self._tries: dict[str, int] = {}

    def configure(self, *, uri_template: str, address: str, timeout_s: float,
                  upload: Callable[..., None], download: Callable[..., None],
                  latest_spec: Callable[[], HostSpec | None] | None = None) -> None:
        self.uri_template, self.address, self.timeout_s = uri_template, address, timeout_s
        self.upload, self.download = upload, download
        if latest_spec is not None:
            self.latest_spec = latest_spec

    def cancelled(self, migration_id: str) -> bool:
        """Has the newest spec (newer than the running pass's, perhaps) cancelled it: the
        migration gone from it, or marked ``cancel``? Without a newer spec: no."""
        spec = self.latest_spec()
        if spec is None:
            return False
        m = next((m for m in spec.migrations if m.id == migration_id), None)
        return m is None or m.cancel

    # -- what compute must not touch -------------------------------------------------
    def held(self, spec: HostSpec) -> set[str]:
        """Instances the compute reconciler leaves alone this pass."""
        out = set()
        for m in spec.migrations:
            if m.role == "source":
                out.add(m.instance_id)
            elif m.kind == "live":
                done = self.oplog.outcome(m.id)
                if done is None or not done.ok:
                    out.add(m.instance_id)
        return out

    # -- the pass -------------------------------------------------------------------------
    def run(self, spec: HostSpec, render: Callable[[InstanceSpec], str],
            host_errors: list[str]) -> None:
        instances = {i.id: i for i in spec.instances}
        for m in spec.migrations:
            if self.oplog.outcome(m.id) is not None:
                continue
            try:
                if m.role == "target" and m.kind == "live" and m.cancel:
                    self._live_cancelled(m)
                elif m.role == "target" and m.kind == "live":
                    if m.run:
                        self._live_in(m, instances.get(m.instance_id), render)
                elif m.role == "source" and m.kind == "cold":
                    self._cold_out(m)
                elif m.role == "target" and m.kind == "cold":
                    self._cold_in(spec, m)
            except NotReady as exc:
                log.info("migration %s waits: %s", m.id, exc)
            except Cancelled as exc:
                log.info("migration %s: %s", m.id, exc)
                if m.role == "target" and m.kind == "live":
                    self.oplog.record(m.id, m.instance_id, False, str(exc))
            except (AgentError, OSError, libvirt.libvirtError) as exc:
                tries = self._tries[m.id] = self._tries.get(m.id, 0) + 1
                retry = getattr(exc, "retryable", True) and tries < TRIES \
                    and not isinstance(exc, PermanentError)
                msg = exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else str(exc)
                if retry:
                    log.warning("migration %s: %s (try %d, will retry)", m.id, msg, tries)
                    host_errors.append(f"migration {m.id}: {msg}")
                else:
                    log.warning("migration %s failed: %s", m.id, msg)
                    self.oplog.record(m.id, m.instance_id, False, msg[:2000])

    def results(self, spec: HostSpec) -> list[OperationResult]:
        out = []
        for m in spec.migrations:
            done = self.oplog.outcome(m.id)
            if done is not None and (m.role == "target" or m.kind == "cold"):
                out.append(OperationResult(id=m.id, ok=done.ok, message=done.message))
        return out

    # -- live, on the target ---------------------------------------------------------------
    def _live_cancelled(self, m: MigrationSpec) -> None:
        if self._running_here(m.instance_id):  # the switch-over came before the cancel
            self.oplog.record(m.id, m.instance_id, True,
                              "the domain already runs here: the cancel came after the switch-over")
        else:
            self.oplog.record(m.id, m.instance_id, False, "cancelled before the copy started")

    def _live_in(self, m: MigrationSpec, inst: InstanceSpec | None,
                 render: Callable[[InstanceSpec], str]) -> None:
        if inst is None:
            raise PermanentError(f"instance {m.instance_id} is not in this host's spec")
        missing = [p.name for p in self._files(inst) if not p.exists()]
        if missing:
            raise NotReady(f"disks/seed not prepared yet: {', '.join(missing)}")
        if self._running_here(inst.id):
            self.oplog.record(m.id, inst.id, True, "the domain already runs here")
            return
        persist_xml = render(inst)
        src_uri = self.uri_template.format(address=m.peer_address)
        dest_uri = self.uri_template.format(address=self.address)
        t0 = time.monotonic()
        src = libvirt.open(src_uri)
        try:
            try:
                dom = src.lookupByName(inst.id)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise PermanentError(f"no domain {inst.id} on the source host") from None
                raise
            if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                # e.g. this agent restarted while its migration ran: let that one finish
                raise NotReady(f"a job is still running on {inst.id} at the source")
            params = {
                libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{self.address}",
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml(
                    dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), persist_xml),
                libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persist_xml,
                libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: [d.device for d in inst.disks],
            }
            log.info("migration %s: pulling %s from %s (live, storage copy)", m.id, inst.id,
                     m.peer_address)
            watchdog = threading.Timer(self.timeout_s, _abort, (dom, m.id))
            watchdog.daemon = True
            watchdog.start()
            finished, cancel_seen = threading.Event(), threading.Event()
            watcher = threading.Thread(target=self._abort_on_cancel,
                                       args=(dom, m.id, finished, cancel_seen),
                                       name=f"cancel-watch-{m.id}", daemon=True)
            watcher.start()
            try:
                dom.migrateToURI3(dest_uri, params, LIVE_FLAGS)
            except libvirt.libvirtError as exc:
                # an error after the switch-over (e.g. in the finish phase) can still leave
                # the guest running here and gone there: then it moved
                if not (self._running_here(inst.id) and not _exists(src, inst.id)):
                    if cancel_seen.is_set():
                        raise Cancelled("cancelled: the live copy was aborted; the guest runs "
                                        f"on the source ({exc.get_error_message()})") from None
                    raise
                log.warning("migration %s reported an error, but %s runs here only", m.id,
                            inst.id)
            finally:
                finished.set()
                watchdog.cancel()
                watcher.join(5)
        finally:
            try:
                src.close()
            except libvirt.libvirtError:
                pass
        took = time.monotonic() - t0
        if not self._running_here(inst.id):
            raise TemporaryError(f"migration of {inst.id} returned but the domain does not run here")
        self.oplog.record(m.id, inst.id, True, f"live migration took {took:.1f}s")
        log.info("migration %s: %s runs here (%.1fs)", m.id, inst.id, took)

    def _abort_on_cancel(self, dom: libvirt.virDomain, migration_id: str,
                         finished: threading.Event, cancel_seen: threading.Event) -> None:
        """Thread beside a live pull: abort its job as soon as a newer spec cancels it."""
        while not finished.wait(self.cancel_poll_s):
            if self.cancelled(migration_id):
                cancel_seen.set()
                log.warning("migration %s: cancelled; aborting the job", migration_id)
                try:
                    dom.abortJob()
                except libvirt.libvirtError as exc:  # e.g. no job any more: it finished
                    log.warning("migration %s: abort failed: %s", migration_id, exc)
                return

    def _files(self, inst: InstanceSpec) -> list[Path]:
        return [disk_file(self.state, inst.id, d.id, d.role) for d in inst.disks] + \
            [self.state.seed_path(inst.id)]

    def _running_here(self, iid: str) -> bool:
        try:
            dom = self.conn.get().lookupByName(iid)
            return bool(dom.isActive()) and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except libvirt.libvirtError:
            return False

    # -- cold, on the source -----------------------------------------------------------------
    def _cold_out(self, m: MigrationSpec) -> None:
        if self.upload is None:
            raise PermanentError("this agent cannot upload disk files")
        try:
            if self.conn.get().lookupByName(m.instance_id).isActive():
                raise PermanentError(f"instance {m.instance_id} is running; a cold migration "
                                     "moves only a stopped one")
        except libvirt.libvirtError:
            pass  # no domain: the files are all there is
        for d in m.disks:
            path = disk_file(self.state, m.instance_id, d.id, d.role)
            if not path.exists():
                raise PermanentError(f"disk file {d.id} is not on this host")
            self.upload(d.url, path, stop=lambda: self.cancelled(m.id))
            log.info("migration %s: uploaded disk %s", m.id, d.id)
        self.oplog.record(m.id, m.instance_id, True, f"uploaded {len(m.disks)} disk(s)")

    # -- cold, on the target -------------------------------------------------------------------
    def _cold_in(self, spec: HostSpec, m: MigrationSpec) -> None:
        if self.download is None:
            raise PermanentError("this agent cannot download disk files")
        stage = staging_dir(self.state) / safe_id(m.id)
        stage.mkdir(parents=True, exist_ok=True)
        images = {i.id: i for i in spec.images}
        for d in m.disks:
            final = stage / f"{safe_id(d.id)}.qcow2"
            if final.exists():
                continue
            backing = None
            if d.image_id:
                image = images.get(d.image_id)
                if image is None:
                    raise NotReady(f"image {d.image_id} is not in the spec yet")
                backing = (self.storage.fetch_image(image), image.format)
            part = stage / f".{d.id}.part"
            part.unlink(missing_ok=True)
            self.download(d.url, part, stop=lambda: self.cancelled(m.id))
            got = sha256_file(part)
            if not d.sha256 or got != d.sha256:
                part.unlink(missing_ok=True)
                raise TemporaryError(f"disk {d.id}: sha256 {got[:12]}… is not the uploaded "
                                     f"{(d.sha256 or '?')[:12]}…; download discarded")
            self._check_and_rebase(part, d.id, backing)
            os.replace(part, final)
            log.info("migration %s: disk %s received and verified", m.id, d.id)
        self.oplog.record(m.id, m.instance_id, True, f"received {len(m.disks)} disk(s), sha256 "
                          "verified")

    def _check_and_rebase(self, path: Path, disk_id: str, backing: tuple[Path, str] | None
                          ) -> None:
        info = json.loads(proc.run(["qemu-img", "info", "--output=json", "-f", "qcow2",
                                    str(path)], timeout=60).stdout)
        if ((info.get("format-specific") or {}).get("data") or {}).get("data-file"):
            raise PermanentError(f"disk {disk_id} names an external data file; refused")
        named = info.get("backing-filename")
        if backing is None:
            if named:
                raise PermanentError(f"data disk {disk_id} names a backing file; refused")
            return
        image_path, fmt = backing
        if not named or Path(named).name != image_path.name:
            raise PermanentError(f"disk {disk_id} is not an overlay of image {image_path.name}")
        # Same image content (same sha256 name), another directory: repoint without copying.
        proc.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", fmt, "-b", str(image_path),
                  str(path)], timeout=60)

    # -- staged files -------------------------------------------------------------------------
    def adopt_staged(self, spec: HostSpec) -> None:
        """Move received disk files into place for instances that have arrived in the spec."""
        root = staging_dir(self.state)
        if not root.exists():
            return
        staged = {p.stem: p for p in root.glob("mig-*/d-*.qcow2")}
        for inst in spec.instances:
            for d in inst.disks:
                src = staged.get(d.id)
                final = disk_file(self.state, inst.id, d.id, d.role)
                if src is not None and not final.exists():
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, final)
                    log.info("disk %s of %s adopted from migration %s", d.id, inst.id,
                             src.parent.name)

    def cleanup(self, spec: HostSpec) -> None:
        """Staging directories of migrations no longer in the spec."""
        root = staging_dir(self.state)
        if not root.exists():
            return
        wanted = {m.id for m in spec.migrations if m.role == "target" and m.kind == "cold"}
        for d in root.iterdir():
            if d.is_dir() and d.name not in wanted:
                shutil.rmtree(d, ignore_errors=True)
                log.info("staging of migration %s removed", d.name)


def dest_xml(source_live_xml: str, rendered_xml: str) -> str:
    """The running definition for this host: the source's (ABI: machine type, CPU, device
    addresses — must be identical) with this host's files (disks by target device,
    seed CD-ROM, console log) and this host's miniecs mark."""
    src = ET.fromstring(source_live_xml)
    ours = ET.fromstring(rendered_xml)
    files = {}
    for disk in ours.findall("devices/disk"):
        tgt, source = disk.find("target"), disk.find("source")
        if tgt is not None and source is not None:
            files[tgt.get("dev")] = source.get("file")
    for disk in src.findall("devices/disk"):
        tgt, source = disk.find("target"), disk.find("source")
        if tgt is None or source is None or tgt.get("dev") not in files:
            raise PermanentError(f"the source's disk {tgt.get('dev') if tgt is not None else '?'}"
                                 " is not in this host's definition")
        source.set("file", files[tgt.get("dev")])
        for chain in disk.findall("backingStore"):  # the source's image path; probed here
            disk.remove(chain)
    log_path = ours.find("devices/serial/source").get("path")
    for tag in ("serial", "console"):
        for el in src.findall(f"devices/{tag}/source"):
            el.set("path", log_path)
    md_src, md_ours = src.find("metadata"), ours.find("metadata")
    if md_src is not None:
        src.remove(md_src)
    if md_ours is not None:
        src.insert(2, md_ours)
    return ET.tostring(src, encoding="unicode")


class NotReady(Exception):
    """The migration cannot run yet (not a failure): try again next pass."""


def _exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError as exc:
        return exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN


def _abort(dom: libvirt.virDomain, migration_id: str) -> None:
    log.warning("migration %s: timed out; aborting the job", migration_id)
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        log.warning("migration %s: abort failed: %s", migration_id, exc)
