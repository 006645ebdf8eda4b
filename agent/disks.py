"""Cloud disks on a hypervisor: data disk files, snapshots, live attach/detach/resize, rollback.

Snapshots are qcow2 *internal* snapshots of the disk's own file (decision in
docs/decisions.md): taking one only copies the L1 table and bumps refcounts
(no data is copied, ~10 ms whatever the disk holds), later writes are
copy-on-write, a rollback (``qemu-img snapshot -a``) leaves every other
snapshot intact, and snapshots are independent of each other, so they can be
deleted in any order and the backing chain never grows (data disk: 1 file;
system disk: overlay + cached image). A disk deleted while it still has
snapshots is moved to ``<state>/snapshots/<disk id>.qcow2`` and kept until its
last snapshot goes: snapshots outlive their disk.

Files:
    <state>/disks/<disk id>.qcow2          data disks (attached or not)
    <state>/instances/<iid>/<disk id>.qcow2 system disks (storage.py)
    <state>/snapshots/<disk id>.qcow2      retained files of deleted disks

A guest that is running has its files open with write locks; snapshots of its
disks are taken and deleted through its QEMU monitor
(``blockdev-snapshot-internal-sync``), everything else through ``qemu-img``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from agent import faults, proc
from agent.errors import AgentError, PermanentError, TemporaryError
from agent.filefacts import FileFacts
from agent.libvirt_conn import LibvirtConnection
from agent.records import OperationLog
from agent.spec import (DiskObserved, HostDiskSpec, HostSpec, ImageSpec, InstanceSpec,
                        OperationResult, SnapshotObserved, SnapshotSpec, StorageOperationSpec)
from agent.storage import sha256_file
from agent.state import StateDir, safe_id

log = logging.getLogger(__name__)

SNAPSHOT_NAME = re.compile(r"^s-[A-Za-z0-9]{1,64}$")
QEMU_IMG_TIMEOUT_S = 3600  # full copies of big disks
OPERATION_TRIES = 5  # a one-shot operation failing this often is reported failed
IMAGE_GC_PERIOD_S = 600  # the image cache is collected at most this often


def data_disks_dir(state: StateDir) -> Path:
    return state.root / "disks"


def retained_dir(state: StateDir) -> Path:
    return state.root / "snapshots"


def transfer_part_path(state: StateDir, disk_id: str) -> Path:
    """Where a disk copied from another host's snapshot is downloaded (kept to resume)."""
    return data_disks_dir(state) / f".{safe_id(disk_id)}.qcow2.part"


def exports_dir(state: StateDir) -> Path:
    return state.root / "exports"


def data_disk_path(state: StateDir, disk_id: str) -> Path:
    return data_disks_dir(state) / f"{safe_id(disk_id)}.qcow2"


def retained_path(state: StateDir, disk_id: str) -> Path:
    return retained_dir(state) / f"{safe_id(disk_id)}.qcow2"


@dataclass(frozen=True)
class DiskFile:
    disk_id: str
    path: Path
    kind: str  # data | system | retained
    instance_id: str | None = None


def find_disk_files(state: StateDir) -> dict[str, DiskFile]:
    """Every disk file miniecs made on this host, by disk id."""
    out: dict[str, DiskFile] = {}
    if state.instances_dir.exists():
        for d in state.instances_dir.iterdir():
            if d.is_dir() and d.name.startswith("i-"):
                for p in d.glob("d-*.qcow2"):
                    out[p.stem] = DiskFile(p.stem, p, "system", d.name)
    for kind, directory in (("retained", retained_dir(state)), ("data", data_disks_dir(state))):
        if directory.exists():
            for p in directory.glob("d-*.qcow2"):
                out[p.stem] = DiskFile(p.stem, p, kind)
    return out


# ---- qemu-img ----------------------------------------------------------------------

class StorageFull(PermanentError):
    """The host's storage has no room for what was asked; retrying the same spec won't help."""


NO_SPACE = "No space left on device"


def qemu_img(*args: str, timeout: float = QEMU_IMG_TIMEOUT_S) -> str:
    try:
        return proc.run(["qemu-img", *args], timeout=timeout).stdout
    except AgentError as exc:
        if NO_SPACE in str(exc) or NO_SPACE in getattr(exc, "stderr", ""):
            raise StorageFull(f"host storage is full: qemu-img {args[0]}: {NO_SPACE}") from None
        raise
    except Exception as exc:  # CalledProcessError and friends
        msg = getattr(exc, "stderr", "") or str(exc)
        raise TemporaryError(f"qemu-img {args[0]}: {str(msg).strip()[:500]}") from None


def check_room(directory: Path, needed: int, what: str) -> None:
    """Refuse (``StorageFull``) before writing ``needed`` bytes into a filesystem without them."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise StorageFull(f"host storage is full: {what} needs {needed >> 20} MiB, "
                          f"{free >> 20} MiB free in {directory.name}/")


def measure(*args: str) -> int:
    """Bytes a new qcow2 needs when written (``qemu-img measure``, fully written data)."""
    out = json.loads(qemu_img("measure", "--output=json", "-O", "qcow2", *args, timeout=60))
    return int(out["required"])


def image_opts(path: Path) -> str:
    """An explicit-format ``--image-opts`` spec (``qemu-img snapshot`` has no ``-f``)."""
    return f"driver=qcow2,file.driver=file,file.filename={str(path).replace(',', ',,')}"


def qcow2_snapshot(flag: str, name: str, path: Path, timeout: float = 600) -> None:
    """``qemu-img snapshot -c|-a|-d NAME`` on one of our (offline) qcow2 files."""
    qemu_img("snapshot", "--image-opts", "-q", flag, name, image_opts(path), timeout=timeout)


def disk_info(path: Path, images_dir: Path) -> dict:
    """``qemu-img info`` of our own qcow2 file, explicit format; refuses a foreign backing file."""
    chain = json.loads(qemu_img("info", "-U", "--backing-chain", "--output=json", "-f", "qcow2",
                                str(path), timeout=30))
    top = chain[0]
    backing = top.get("full-backing-filename") or top.get("backing-filename")
    if backing and Path(backing).resolve().parent != images_dir.resolve():
        raise PermanentError(f"{path.name} names backing file {backing!r} outside the image "
                             "cache; refused")
    if ((top.get("format-specific") or {}).get("data") or {}).get("data-file"):
        raise PermanentError(f"{path.name} names an external data file; refused")
    return {"virtual_size": int(top.get("virtual-size", 0)), "chain_depth": len(chain),
            "snapshots": [s["name"] for s in top.get("snapshots", [])],
            "backing": backing or None}


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


DISK_INFO_KIND = "disk-info-2"  # the format of disk_info's answer (bump when it changes)
_INFO = FileFacts(None, DISK_INFO_KIND)


def use_disk_info_store(store: Path | None) -> FileFacts:
    """Remember ``disk_info`` answers in ``store`` (the agent's state dir), across restarts."""
    global _INFO
    _INFO = FileFacts(store, DISK_INFO_KIND)
    return _INFO


def cached_disk_info(path: Path, images_dir: Path) -> dict:
    """``disk_info`` remembered while the file is unchanged (``agent.filefacts``).

    Every change qemu-img or QEMU makes to the snapshot table, the size or the backing
    file is a write to the file, which moves its mtime and ctime; a pass over idle disks
    then costs one ``stat`` per disk instead of a ``qemu-img`` process each, several
    times a pass — and so does the first pass after an agent restart.
    """
    st = os.stat(path)
    info = _INFO.get(path, st)
    if info is not None:
        return info
    info = disk_info(path, images_dir)
    _INFO.put(path, st, info)
    return info


def save_disk_info() -> None:
    _INFO.save()


def copy_snapshot(src: Path, snapshot_id: str, dest: Path, size_bytes: int | None = None) -> None:
    """A standalone qcow2 (no backing file) with the content of ``src`` at ``snapshot_id``.

    Written to a temporary name and renamed, so ``dest`` is never half-written.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # -U: the source may be open in a running guest (as for the convert below)
    check_room(dest.parent, measure("-U", "-f", "qcow2", "-l", f"snapshot.name={snapshot_id}",
                                    str(src)), f"a copy of snapshot {snapshot_id}")
    try:
        qemu_img("convert", "-U", "-f", "qcow2", "-l", f"snapshot.name={snapshot_id}",
                 "-O", "qcow2", str(src), str(tmp))
        if size_bytes:
            info = json.loads(qemu_img("info", "--output=json", "-f", "qcow2", str(tmp)))
            if int(info["virtual-size"]) < size_bytes:
                qemu_img("resize", "-q", "-f", "qcow2", str(tmp), str(size_bytes))
        fsync_file(tmp)
        faults.point("storage.disk_copy.before_publish")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# ---- image cache GC ------------------------------------------------------------------

def unused_cached_images(state: StateDir, needed: set[str]) -> list[Path]:
    """Cached images that neither the spec (``needed``: file names) nor any disk file needs.

    Every disk file miniecs keeps — system disks, data disks, and the retained files of
    deleted disks whose snapshots remain — is asked for its backing file with an
    explicit format. If any cannot be read, nothing is collected: a base is never
    removed on a guess. Partial downloads (``.part``) are left to the fetcher.
    """
    if not state.images_dir.exists():
        return []
    keep = set(needed)
    for f in find_disk_files(state).values():
        try:
            # explicit format, remembered while the file is unchanged; a backing file
            # outside the image cache is refused (and so nothing is collected)
            backing = cached_disk_info(f.path, state.images_dir)["backing"]
        except (AgentError, OSError) as exc:
            log.warning("image cache GC skipped: %s", exc)
            return []
        if backing:
            keep.add(Path(backing).name)
    return sorted(p for p in state.images_dir.iterdir()
                  if p.is_file() and not p.name.endswith(".part") and p.name not in keep)


def collect_image_cache(state: StateDir, spec: HostSpec) -> list[Path]:
    """Remove the cached images nothing needs; returns what was removed."""
    removed = unused_cached_images(state, {f"{m.sha256}.{m.format}" for m in spec.images})
    for p in removed:
        p.unlink(missing_ok=True)
        log.info("image cache: removed %s (no spec image, disk or snapshot needs it)", p.name)
    return removed


# ---- libvirt side --------------------------------------------------------------------

@dataclass
class DomainDisks:
    instance_id: str
    active: bool
    disks: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (target dev, alias)


def domain_disks(conn: libvirt.virConnect, instance_ids: set[str],
                 listed: list[libvirt.virDomain] | None = None) -> dict[str, DomainDisks]:
    """File disks of our domains: live XML for running ones, the definition otherwise.

    ``listed``: the domains of one ``listAllDomains`` (each then costs one call, for its
    XML: the listing says whether it runs); else each is looked up by name.
    """
    out: dict[str, DomainDisks] = {}
    if listed is not None:
        found = [(d.name(), d) for d in listed if d.name() in instance_ids]
    else:
        found = [(iid, None) for iid in instance_ids]
    for iid, dom in found:
        try:
            if dom is None:
                dom = conn.lookupByName(iid)
                active = bool(dom.isActive())
            else:
                active = dom.ID() != -1  # the id the listing gave: -1 when shut off
            root = ET.fromstring(dom.XMLDesc(0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue
            raise
        dd = DomainDisks(iid, active)
        for disk in root.findall("devices/disk[@device='disk']"):
            src, tgt, alias = disk.find("source"), disk.find("target"), disk.find("alias")
            if src is not None and src.get("file") and tgt is not None:
                dd.disks[src.get("file")] = (tgt.get("dev", ""),
                                             alias.get("name", "") if alias is not None else "")
        out[iid] = dd
    return out


def _qmp(dom: libvirt.virDomain, command: str, arguments: dict | None = None):
    import libvirt_qemu  # shipped with the libvirt bindings

    req = {"execute": command, **({"arguments": arguments} if arguments else {})}
    answer = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(req), 0))
    if "error" in answer:
        raise TemporaryError(f"{command}: {answer['error'].get('desc', answer['error'])}")
    return answer.get("return")


def _node_name(dom: libvirt.virDomain, path: Path) -> str:
    for blk in _qmp(dom, "query-block"):
        inserted = blk.get("inserted") or {}
        if inserted.get("file") == str(path) and inserted.get("node-name"):
            return inserted["node-name"]
    raise TemporaryError(f"{path.name} is not open in domain {dom.name()}")


# ---- the reconciler -----------------------------------------------------------------

class DiskReconciler:
    """Level-triggered data disks and snapshots; one-shot rollbacks and exports."""

    def __init__(self, state: StateDir, conn: LibvirtConnection, oplog: OperationLog,
                 upload: Callable[[str, Path], None] | None = None,
                 download: Callable[[str, Path], None] | None = None) -> None:
        self.state = state
        self.conn = conn
        self.oplog = oplog
        self.upload = upload
        self.download = download  # download(url, part): resumable, for copies from other hosts
        self.snapshot_failures: dict[str, str] = {}
        self.disk_errors: dict[str, str] = {}
        self.disk_failures: dict[str, str] = {}  # disks that could not be made (not retried)
        self._op_tries: dict[str, int] = {}
        self._last_image_gc = float("-inf")
        self._pass_domains: dict[str, DomainDisks] | None = None  # after_domains → report
        use_disk_info_store(state.root / "disk-info.json")  # survives agent restarts

    # helpers ---------------------------------------------------------------
    def _domains(self, spec: HostSpec, *, reuse: bool = False) -> dict[str, DomainDisks]:
        """Disks of the spec's and every other ``i-`` domain, from one listing.

        ``reuse``: the answer ``after_domains`` read this pass, when nothing since
        changed a domain (only the hot plug there does; it drops it).
        """
        if reuse and self._pass_domains is not None:
            return self._pass_domains
        ids = {i.id for i in spec.instances}
        conn = self.conn.get()
        try:
            listed = conn.listAllDomains()
        except libvirt.libvirtError:
            return domain_disks(conn, ids)
        ids |= {d.name() for d in listed if d.name().startswith("i-")}
        return domain_disks(conn, ids, listed)

    @staticmethod
    def _users(domains: dict[str, DomainDisks]) -> dict[str, DomainDisks]:
        return {p: dd for dd in domains.values() for p in dd.disks}

    def _running_dom(self, users: dict[str, DomainDisks], path: Path) -> libvirt.virDomain | None:
        dd = users.get(str(path))
        if dd is None or not dd.active:
            return None
        return self.conn.get().lookupByName(dd.instance_id)

    # before the domains: files, rollbacks, snapshots, resizes ----------------------
    def before_domains(self, spec: HostSpec, host_errors: list[str]) -> None:
        self._pass_domains = None
        data_disks_dir(self.state).mkdir(parents=True, exist_ok=True)
        files = find_disk_files(self.state)
        try:
            users = self._users(self._domains(spec))
        except libvirt.libvirtError as exc:
            host_errors.append(f"disks: libvirt: {exc}")
            return
        for d in spec.disks:
            if (d.id not in files or files[d.id].kind == "retained") \
                    and d.id not in self.disk_failures:
                self._guard(d.id, host_errors, self._create_or_fail, d, files)
        files = find_disk_files(self.state)
        # Rollbacks before snapshots are taken, exports after: an image made from an
        # instance exports the snapshot this same pass takes.
        for op in spec.storage_operations:
            if op.kind != "export_snapshot" and self.oplog.outcome(op.id) is None:
                self._run_operation(op, files, users)
        self._snapshots(spec, files, users, host_errors)
        for op in spec.storage_operations:
            if op.kind == "export_snapshot" and self.oplog.outcome(op.id) is None:
                self._run_operation(op, files, users)
        for d in spec.disks:
            if d.id in files:
                self._guard(d.id, host_errors, self._grow, d, files[d.id].path, users)

    def _guard(self, disk_id: str, host_errors: list[str], fn, *args) -> None:
        try:
            fn(*args)
            self.disk_errors.pop(disk_id, None)
        except (AgentError, OSError, libvirt.libvirtError) as exc:
            msg = f"disk {disk_id}: {exc}"
            if self.disk_errors.get(disk_id) != msg:
                log.warning("%s", msg)
            self.disk_errors[disk_id] = msg
            host_errors.append(msg)

    def _create_or_fail(self, d: HostDiskSpec, files: dict[str, DiskFile]) -> None:
        """Create; a permanent failure (storage full, foreign file) is reported, not retried."""
        try:
            self._create(d, files)
        except PermanentError as exc:
            self.disk_failures[d.id] = f"disk {d.id}: {exc}"
            raise

    def _create(self, d: HostDiskSpec, files: dict[str, DiskFile]) -> None:
        target = data_disk_path(self.state, d.id)
        have = files.get(d.id)
        if have is not None and have.kind == "retained":
            # deleted while snapshots remained, now wanted again (never happens by id reuse)
            raise PermanentError(f"{d.id} exists only as a retained snapshot holder")
        if d.source_snapshot_id:
            src = files.get(d.source_disk_id or "")
            if src is not None:
                copy_snapshot(src.path, d.source_snapshot_id, target, d.size_bytes)
                log.info("created disk %s from snapshot %s", d.id, d.source_snapshot_id)
            elif d.source_image is not None:
                self._download_copy(d, d.source_image, target)
            elif d.source_disk_id:
                raise TemporaryError(f"source disk {d.source_disk_id} of snapshot "
                                     f"{d.source_snapshot_id} is not on this host")
            else:
                raise TemporaryError(f"snapshot {d.source_snapshot_id} is held on another "
                                     "host; waiting for its copy in the image store")
            return
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            # a thin disk: its metadata has to fit now, its data as the guest writes it
            check_room(target.parent, measure("--size", str(d.size_bytes)), f"disk {d.id}")
            qemu_img("create", "-q", "-f", "qcow2", str(tmp), str(d.size_bytes), timeout=60)
            faults.point("storage.disk_create.before_publish")
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StorageFull(f"host storage is full: disk {d.id}: {NO_SPACE}") from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
        log.info("created data disk %s (%d bytes)", d.id, d.size_bytes)

    def _download_copy(self, d: HostDiskSpec, image: ImageSpec, target: Path) -> None:
        """The disk from a snapshot of another host: download its flattened copy (resumable),
        verify sha256 and that it is a plain qcow2, grow it to the disk's size, publish."""
        if self.download is None:
            raise PermanentError("this agent cannot download images")
        part = transfer_part_path(self.state, d.id)
        have = part.stat().st_size if part.exists() else 0
        check_room(target.parent, max(image.size_bytes - have, 0),
                   f"the copy of snapshot {d.source_snapshot_id}")
        try:
            self.download(image.url, part)
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StorageFull(f"host storage is full: copy of snapshot "
                                  f"{d.source_snapshot_id}: {NO_SPACE}") from None
            raise
        got = sha256_file(part)
        if got != image.sha256:
            part.unlink(missing_ok=True)
            raise TemporaryError(f"copy of snapshot {d.source_snapshot_id}: sha256 mismatch "
                                 f"(got {got[:12]}…, want {image.sha256[:12]}…); discarded")
        # verified: from here on it is changed (grown), so it is no longer a resumable part
        tmp = target.with_name(f".{target.name}.tmp")
        os.replace(part, tmp)
        try:
            info = disk_info(tmp, self.state.images_dir)
            if info["chain_depth"] != 1:
                raise PermanentError(f"copy of snapshot {d.source_snapshot_id} names a backing "
                                     "file; refused")
            if info["virtual_size"] < d.size_bytes:
                qemu_img("resize", "-q", "-f", "qcow2", str(tmp), str(d.size_bytes), timeout=60)
            fsync_file(tmp)
            faults.point("storage.disk_transfer.before_publish")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("created disk %s from snapshot %s copied from another host",
                 d.id, d.source_snapshot_id)

    def _grow(self, d: HostDiskSpec, path: Path, users: dict[str, DomainDisks]) -> None:
        info = cached_disk_info(path, self.state.images_dir)
        if info["virtual_size"] >= d.size_bytes:
            return
        dom = self._running_dom(users, path)
        if dom is not None:
            dev = users[str(path)].disks[str(path)][0]
            dom.blockResize(dev, d.size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            log.info("resized disk %s online to %d bytes", d.id, d.size_bytes)
        else:
            qemu_img("resize", "-q", "-f", "qcow2", str(path), str(d.size_bytes), timeout=60)
            log.info("resized disk %s offline to %d bytes", d.id, d.size_bytes)

    def _snapshots(self, spec: HostSpec, files: dict[str, DiskFile],
                   users: dict[str, DomainDisks], host_errors: list[str]) -> None:
        wanted: dict[str, list[SnapshotSpec]] = {}
        for s in spec.snapshots:
            wanted.setdefault(s.disk_id, []).append(s)
        for disk_id, f in files.items():
            try:
                have = set(cached_disk_info(f.path, self.state.images_dir)["snapshots"])
            except AgentError as exc:
                host_errors.append(f"disk {disk_id}: {exc}")
                continue
            want = {s.id for s in wanted.get(disk_id, [])}
            for name in sorted(have - want):
                if SNAPSHOT_NAME.match(name):
                    self._guard(disk_id, host_errors, self._delete_snapshot, f, name, users)
            for s in wanted.get(disk_id, []):
                if s.id in have or s.state != "progressing" or s.id in self.snapshot_failures:
                    continue
                try:
                    self._take_snapshot(f, s.id, users)
                except (AgentError, libvirt.libvirtError) as exc:
                    self.snapshot_failures[s.id] = str(exc)
                    log.warning("snapshot %s of %s failed: %s", s.id, disk_id, exc)
        for s in spec.snapshots:
            if s.disk_id not in files and s.state == "progressing":
                self.snapshot_failures.setdefault(s.id, f"disk {s.disk_id} is not on this host")

    def _take_snapshot(self, f: DiskFile, name: str, users: dict[str, DomainDisks]) -> None:
        dom = self._running_dom(users, f.path)
        faults.point("storage.snapshot.before_take")
        if dom is not None:
            node = _node_name(dom, f.path)
            try:
                _qmp(dom, "blockdev-snapshot-internal-sync", {"device": node, "name": name})
            except TemporaryError as exc:
                if NO_SPACE in str(exc):
                    raise StorageFull(f"host storage is full: {exc}") from None
                raise
        else:
            qcow2_snapshot("-c", name, f.path, timeout=120)
        # taken but not reported: after a restart the snapshot is found in the file
        faults.point("storage.snapshot.after_take")
        log.info("snapshot %s of disk %s taken%s", name, f.disk_id, " (live)" if dom else "")

    def _delete_snapshot(self, f: DiskFile, name: str, users: dict[str, DomainDisks]) -> None:
        dom = self._running_dom(users, f.path)
        faults.point("storage.snapshot_delete.before")
        if dom is not None:
            node = _node_name(dom, f.path)
            _qmp(dom, "blockdev-snapshot-delete-internal-sync", {"device": node, "name": name})
        else:
            qcow2_snapshot("-d", name, f.path)
        faults.point("storage.snapshot_delete.after")
        log.info("snapshot %s of disk %s deleted", name, f.disk_id)

    def _run_operation(self, op: StorageOperationSpec, files: dict[str, DiskFile],
                       users: dict[str, DomainDisks]) -> None:
        f = files.get(op.disk_id)
        try:
            if f is None:
                raise PermanentError(f"disk {op.disk_id} is not on this host")
            if op.kind == "reset_disk":
                if self._running_dom(users, f.path) is not None:
                    raise PermanentError(f"disk {op.disk_id} is in use by a running instance")
                have = cached_disk_info(f.path, self.state.images_dir)["snapshots"]
                if op.snapshot_id not in have:
                    raise PermanentError(f"snapshot {op.snapshot_id} is not in disk {op.disk_id}")
                # Idempotent: applying the same snapshot again to a stopped disk changes nothing,
                # so a crash before the outcome is recorded just runs it again.
                faults.point("storage.reset.before_apply")
                qcow2_snapshot("-a", op.snapshot_id, f.path)
                faults.point("storage.reset.after_apply")
                message = f"disk {op.disk_id} rolled back to {op.snapshot_id}"
            elif op.kind == "reinit_disk":
                message = self._reinit(op, f, users)
            elif op.kind == "export_snapshot":
                if self.upload is None or not op.upload_url:
                    raise PermanentError("this agent cannot upload images")
                out = exports_dir(self.state) / f"{safe_id(op.snapshot_id)}.qcow2"
                copy_snapshot(f.path, op.snapshot_id, out)
                faults.point("storage.export.after_copy")
                try:
                    self.upload(op.upload_url, out)
                    # uploaded, not recorded: the controller published the image on
                    # receipt and took the operation out of the spec
                    faults.point("storage.export.after_upload")
                finally:
                    out.unlink(missing_ok=True)
                message = f"snapshot {op.snapshot_id} exported"
            else:  # pragma: no cover
                raise PermanentError(f"unknown storage operation {op.kind!r}")
        except AgentError as exc:
            tries = self._op_tries[op.id] = self._op_tries.get(op.id, 0) + 1
            if exc.retryable and tries < OPERATION_TRIES:
                log.warning("storage operation %s: %s (will retry)", op.id, exc)
                return
            self.oplog.record(op.id, op.disk_id, False, str(exc))
            log.warning("storage operation %s failed: %s", op.id, exc)
            return
        self.oplog.record(op.id, op.disk_id, True, message)
        log.info("storage operation %s: %s", op.id, message)

    def _reinit(self, op: StorageOperationSpec, f: DiskFile,
                users: dict[str, DomainDisks]) -> str:
        """A system disk back to its image: a fresh overlay on the same cached image.

        Refused while its guest runs or while the file holds snapshots (they would
        go with it). Re-running after a crash wipes a disk nobody has used since.
        """
        if f.kind != "system":
            raise PermanentError(f"disk {op.disk_id} is not a system disk")
        if self._running_dom(users, f.path) is not None:
            raise PermanentError(f"disk {op.disk_id} is in use by a running instance")
        top = json.loads(qemu_img("info", "-U", "--output=json", "-f", "qcow2", str(f.path),
                                  timeout=30))
        if top.get("snapshots"):
            raise PermanentError(f"disk {op.disk_id} holds snapshots; refusing to re-initialise")
        backing = top.get("full-backing-filename") or top.get("backing-filename")
        if not backing or Path(backing).resolve().parent != self.state.images_dir.resolve():
            raise PermanentError(f"disk {op.disk_id} has no image in the cache to go back to")
        fmt = top.get("backing-filename-format") or "qcow2"
        if fmt not in ("qcow2", "raw"):
            raise PermanentError(f"disk {op.disk_id}: backing format {fmt!r} refused")
        tmp = f.path.with_name(f".{f.path.name}.tmp")
        tmp.unlink(missing_ok=True)
        qemu_img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(Path(backing).resolve()),
                 str(tmp), str(int(top.get("virtual-size", 0))), timeout=60)
        os.replace(tmp, f.path)
        return f"disk {op.disk_id} re-initialised from its image"

    # after the domains: hot plug ------------------------------------------------
    def after_domains(self, spec: HostSpec, render: Callable[[InstanceSpec], str],
                      host_errors: list[str]) -> None:
        self._pass_domains = None
        try:
            domains = self._domains(spec)
        except libvirt.libvirtError as exc:
            host_errors.append(f"disks: libvirt: {exc}")
            return
        self._pass_domains = domains  # for cleanup and the report, unless a plug changes it
        ddir = str(data_disks_dir(self.state))
        for inst in spec.instances:
            dd = domains.get(inst.id)
            if dd is None or not dd.active:
                continue
            wanted = {str(data_disk_path(self.state, d.id)): d for d in inst.disks
                      if d.role == "data"}
            live = {p for p in dd.disks if os.path.dirname(p) == ddir}
            dom = None
            for path in sorted(set(wanted) - live):
                if not os.path.exists(path):
                    continue
                try:
                    dom = dom or self.conn.get().lookupByName(inst.id)
                    xml = _disk_element(render(inst), wanted[path].device)
                    self._pass_domains = None
                    dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    log.info("hot-plugged %s into %s", Path(path).stem, inst.id)
                except (libvirt.libvirtError, KeyError, ValueError) as exc:
                    host_errors.append(f"attach {Path(path).stem} to {inst.id}: {exc}")
            for path in sorted(live - set(wanted)):
                try:
                    dom = dom or self.conn.get().lookupByName(inst.id)
                    xml = _disk_element(dom.XMLDesc(0), dd.disks[path][0])
                    self._pass_domains = None
                    dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    log.info("asked %s to release %s", inst.id, Path(path).stem)
                except libvirt.libvirtError as exc:
                    if "already in the process of unplug" not in str(exc):
                        host_errors.append(f"detach {Path(path).stem} from {inst.id}: {exc}")

    # cleanup and report -----------------------------------------------------------
    def retained_system_disks(self, spec: HostSpec) -> set[str]:
        return {s.disk_id for s in spec.snapshots}

    def cleanup(self, spec: HostSpec, host_errors: list[str]) -> None:
        """Data disks that left the spec: kept as snapshot holders or removed; GC holders."""
        try:
            users = self._users(self._domains(spec, reuse=True))
        except libvirt.libvirtError as exc:
            host_errors.append(f"disks: libvirt: {exc}")
            return
        wanted = {d.id for d in spec.disks}
        holders = {s.disk_id for s in spec.snapshots}
        for disk_id in set(self.disk_failures) - wanted:
            del self.disk_failures[disk_id]
        system_of = {i.id: {d.id for d in i.disks if d.role == "system"} for i in spec.instances}
        for disk_id, f in find_disk_files(self.state).items():
            if f.kind == "system" and f.instance_id in system_of and \
                    disk_id not in system_of[f.instance_id] and str(f.path) not in users:
                self._release_system_disk(f, disk_id in holders, host_errors)
                continue
            if f.kind == "system" or disk_id in wanted or str(f.path) in users:
                continue
            try:
                faults.point("storage.disk_delete.before")
                if f.kind == "data" and disk_id in holders:
                    retained_dir(self.state).mkdir(parents=True, exist_ok=True)
                    os.replace(f.path, retained_path(self.state, disk_id))
                    log.info("disk %s deleted; file kept for its snapshots", disk_id)
                elif disk_id not in holders:
                    f.path.unlink(missing_ok=True)
                    log.info("removed %s file of %s", f.kind, disk_id)
                faults.point("storage.disk_delete.after")
            except OSError as exc:
                host_errors.append(f"disk {disk_id}: {exc}")
        self._sweep_leftovers(spec, host_errors)
        now = time.monotonic()
        if now - self._last_image_gc >= IMAGE_GC_PERIOD_S:
            self._last_image_gc = now
            try:
                collect_image_cache(self.state, spec)
            except OSError as exc:
                host_errors.append(f"image cache GC: {exc}")

    def _sweep_leftovers(self, spec: HostSpec, host_errors: list[str]) -> None:
        """Temporary files a killed agent left (``.<name>.tmp``) and exports nobody awaits.

        Every temporary file is written and renamed within one call of this (single
        threaded) reconciler, so any that exists between passes is a crash's leftover.
        """
        pending = {f"{safe_id(op.snapshot_id)}.qcow2" for op in spec.storage_operations
                   if op.kind == "export_snapshot"}
        for directory in (data_disks_dir(self.state), retained_dir(self.state), exports_dir(self.state)):
            if not directory.exists():
                continue
            wanted_parts = {transfer_part_path(self.state, d.id).name for d in spec.disks}
            for p in directory.iterdir():
                stale = p.name.startswith(".") and p.name.endswith(".tmp")
                # a download is kept to resume while its disk is wanted
                stale = stale or (p.name.startswith(".") and p.name.endswith(".part")
                                  and p.name not in wanted_parts)
                if directory == exports_dir(self.state):
                    stale = stale or (p.is_file() and p.name not in pending)
                if stale and p.is_file():
                    try:
                        p.unlink()
                        log.info("removed leftover %s", p)
                    except OSError as exc:
                        host_errors.append(f"leftover {p.name}: {exc}")

    def _release_system_disk(self, f: DiskFile, held: bool, host_errors: list[str]) -> None:
        """A replaced system disk (its instance stays): kept for its snapshots, or removed."""
        try:
            if held:
                retained_dir(self.state).mkdir(parents=True, exist_ok=True)
                os.replace(f.path, retained_path(self.state, f.disk_id))
                log.info("system disk %s of %s replaced; file kept for its snapshots",
                         f.disk_id, f.instance_id)
            else:
                f.path.unlink(missing_ok=True)
                log.info("system disk %s of %s replaced; file removed", f.disk_id, f.instance_id)
        except OSError as exc:
            host_errors.append(f"disk {f.disk_id}: {exc}")

    def report_fields(self, spec: HostSpec) -> dict:
        files = find_disk_files(self.state)
        try:
            users = self._users(self._domains(spec, reuse=True))
        except libvirt.libvirtError:
            users = {}
        self._pass_domains = None
        disks: list[DiskObserved] = []
        present: dict[str, set[str]] = {}
        for disk_id, f in sorted(files.items()):
            dd = users.get(str(f.path))
            try:
                info = cached_disk_info(f.path, self.state.images_dir)
                present[disk_id] = set(info["snapshots"])
                disks.append(DiskObserved(
                    id=disk_id, size_bytes=info["virtual_size"],
                    attached_to=dd.instance_id if dd else None, chain_depth=info["chain_depth"],
                    snapshot_ids=sorted(info["snapshots"]), error=self.disk_errors.get(disk_id)))
            except AgentError as exc:
                disks.append(DiskObserved(id=disk_id, attached_to=dd.instance_id if dd else None,
                                          error=str(exc)))
        for d in spec.disks:
            if d.id not in files:
                failure = self.disk_failures.get(d.id)
                disks.append(DiskObserved(id=d.id, exists=False, failed=failure is not None,
                                          error=failure or self.disk_errors.get(d.id)))
        snaps = []
        for s in spec.snapshots:
            if s.id in present.get(s.disk_id, set()):
                snaps.append(SnapshotObserved(id=s.id, state="accomplished"))
                self.snapshot_failures.pop(s.id, None)
            elif s.id in self.snapshot_failures:
                snaps.append(SnapshotObserved(id=s.id, state="failed",
                                              message=self.snapshot_failures[s.id]))
            elif s.state == "accomplished":
                snaps.append(SnapshotObserved(id=s.id, state="missing",
                                              message=f"not found in disk {s.disk_id}"))
        ops = []
        for op in spec.storage_operations:
            out = self.oplog.outcome(op.id)
            if out is not None:
                ops.append(OperationResult(id=op.id, ok=out.ok, message=out.message))
        save_disk_info()  # the last use of disk infos in a pass
        return {"disks": disks, "snapshots": snaps, "storage_operations": ops}


def _disk_element(domain_xml: str, target_dev: str) -> str:
    root = ET.fromstring(domain_xml)
    for disk in root.findall("devices/disk[@device='disk']"):
        tgt = disk.find("target")
        if tgt is not None and tgt.get("dev") == target_dev:
            return ET.tostring(disk, encoding="unicode")
    raise KeyError(f"no disk {target_dev} in the domain XML")
