"""Storage: the image cache, instance disks (qcow2 overlays) and seeds — plan, then apply.

``plan_storage`` is a pure function from the spec and what the state
directory holds to a list of actions; ``StorageApplier`` executes them, each
idempotently. Creation actions run before the domains are reconciled,
``RemoveInstanceFiles`` after (never while a domain still uses the files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agent import faults, proc
from agent import seed as _seed_module
from agent.errors import PermanentError, TemporaryError
from agent.filefacts import FileFacts
from agent.seed import read_seed_iso, render_seed, write_seed_iso
from agent.spec import DiskSpec, HostSpec, ImageSpec, InstanceSpec
from agent.state import StateDir

log = logging.getLogger(__name__)


# ---- actions -------------------------------------------------------------------

@dataclass(frozen=True)
class FetchImage:
    image: ImageSpec
    instance_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateDisk:
    instance_id: str
    disk: DiskSpec
    image: ImageSpec | None  # backing image (system disk) or None (empty data disk)


@dataclass(frozen=True)
class WriteSeed:
    instance_id: str
    files: dict[str, bytes] = field(hash=False)


@dataclass(frozen=True)
class RemoveInstanceFiles:
    instance_id: str
    retain: tuple[str, ...] = ()  # system disks whose snapshots outlive the instance


StorageAction = FetchImage | CreateDisk | WriteSeed | RemoveInstanceFiles


@dataclass(frozen=True)
class SeedSeen:
    """A seed ISO known by the digest of its files (``seed_digest``), without its content.

    ``spec_key`` is the ``seed_spec_key`` of the instance spec the files were last
    found equal to the rendering of (None: not compared yet).
    """

    digest: str
    spec_key: str | None = None
    stat: os.stat_result | None = field(default=None, compare=False, repr=False)


@dataclass
class StorageObserved:
    cached_images: set[str]  # file names in images/ ("<sha256>.<fmt>")
    instance_files: dict[str, set[str]]  # instance id -> file names in its directory
    seeds: dict[str, dict[str, bytes] | SeedSeen]  # instance id -> its current seed ISO's files


SEED_FACTS_KIND = "seed-1"
# what a seed's rendering depends on besides the instance spec: the renderer and its YAML
SEED_RENDERER = hashlib.sha256(Path(_seed_module.__file__).read_bytes()
                               + yaml.__version__.encode()).hexdigest()[:16]
_SEED_RENDERS: dict[str, tuple[str, dict[str, bytes]]] = {}  # spec key -> (digest, files)


def seed_digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + len(files[name]).to_bytes(8, "big") + files[name])
    return h.hexdigest()


def seed_spec_key(inst: InstanceSpec) -> str:
    """Names the seed rendering of ``inst`` (the spec and the renderer's version)."""
    return hashlib.sha256(SEED_RENDERER.encode() + inst.model_dump_json().encode()).hexdigest()


def rendered_seed(inst: InstanceSpec) -> tuple[str, str, dict[str, bytes]]:
    """(spec key, digest, files) of ``inst``'s seed; rendered once per distinct spec."""
    key = seed_spec_key(inst)
    hit = _SEED_RENDERS.get(key)
    if hit is None:
        files = render_seed(inst)
        if len(_SEED_RENDERS) >= 4096:
            _SEED_RENDERS.clear()
        hit = _SEED_RENDERS[key] = (seed_digest(files), files)
    return key, hit[0], hit[1]


def seed_in_sync(inst: InstanceSpec, seen: dict[str, bytes] | SeedSeen | None) -> bool:
    """True when the seed ISO seen holds what ``inst`` renders to."""
    if seen is None:
        return False
    if isinstance(seen, SeedSeen):
        if seen.spec_key is not None and seen.spec_key == seed_spec_key(inst):
            return True  # unchanged since found equal for this very spec
        return seen.digest == rendered_seed(inst)[1]
    return seen == rendered_seed(inst)[2]


class InstanceBlocked(Exception):
    """A per-instance planning problem (e.g. its image is not in the spec)."""


# ---- plan ----------------------------------------------------------------------

def plan_storage(spec: HostSpec, observed: StorageObserved, *, busy: set[str] = frozenset()
                 ) -> tuple[list[StorageAction], dict[str, str]]:
    """Actions that make the state dir match ``spec``, and per-instance blocking errors.

    ``busy`` are instance ids whose domain still exists: their files are never removed.
    """
    actions: list[StorageAction] = []
    blocked: dict[str, str] = {}
    images = {m.id: m for m in spec.images}
    users: dict[str, list[str]] = {}
    for inst in spec.instances:
        for d in inst.disks:
            if d.image_id:
                users.setdefault(d.image_id, []).append(inst.id)
    for image_id, iids in sorted(users.items()):
        m = images.get(image_id)
        if m is None:
            for iid in iids:
                blocked[iid] = f"image {image_id} is not available to this host yet"
        elif f"{m.sha256}.{m.format}" not in observed.cached_images:
            actions.append(FetchImage(m, tuple(sorted(set(iids)))))
    for inst in spec.instances:
        if inst.id in blocked:
            continue
        have = observed.instance_files.get(inst.id, set())
        for d in inst.disks:
            if d.role == "system" and f"{d.id}.qcow2" not in have:
                actions.append(CreateDisk(inst.id, d, images.get(d.image_id) if d.image_id else None))
        if not seed_in_sync(inst, observed.seeds.get(inst.id)):
            actions.append(WriteSeed(inst.id, rendered_seed(inst)[2]))
    wanted = {i.id for i in spec.instances}
    holders = {s.disk_id for s in spec.snapshots}
    for iid in sorted(observed.instance_files):
        if iid not in wanted and iid not in busy:
            retain = tuple(sorted(name.removesuffix(".qcow2")
                                  for name in observed.instance_files[iid]
                                  if name.removesuffix(".qcow2") in holders))
            actions.append(RemoveInstanceFiles(iid, retain))
    return actions, blocked


def observe_storage(state: StateDir, seed_facts: FileFacts | None = None) -> StorageObserved:
    """Read what the state directory holds (cheap: names, and the small seed ISOs).

    With ``seed_facts``, a seed ISO unchanged since it was last read is known by its
    remembered digest (``SeedSeen``) instead of being parsed again.
    """
    cached = {p.name for p in state.images_dir.glob("*") if p.is_file()
              and not p.name.endswith(".part")} if state.images_dir.exists() else set()
    inst_files: dict[str, set[str]] = {}
    seeds: dict[str, dict[str, bytes] | SeedSeen] = {}
    if state.instances_dir.exists():
        for d in state.instances_dir.iterdir():
            if not d.is_dir() or not d.name.startswith("i-"):
                continue
            inst_files[d.name] = {p.name for p in d.iterdir()}
            if "seed.iso" not in inst_files[d.name]:
                continue
            seed = d / "seed.iso"
            try:
                st = os.stat(seed)
            except OSError:
                continue
            fact = seed_facts.get(seed, st) if seed_facts is not None else None
            if fact is not None:
                seeds[d.name] = SeedSeen(fact["digest"], fact.get("spec"), st)
                continue
            try:
                files = read_seed_iso(seed)[1]
            except Exception:  # a damaged seed is simply rewritten
                seeds[d.name] = {}
                continue
            if seed_facts is None:
                seeds[d.name] = files
            else:
                seeds[d.name] = SeedSeen(seed_digest(files), None, st)
                seed_facts.put(seed, st, {"digest": seeds[d.name].digest})
    return StorageObserved(cached, inst_files, seeds)


# ---- apply ---------------------------------------------------------------------

def qemu_img_info(path: Path, fmt: str) -> dict:
    """``qemu-img info`` with an explicit format (never probe an untrusted image's format)."""
    out = proc.run(["qemu-img", "info", "-U", "--output=json", "-f", fmt, str(path)], timeout=30)
    return json.loads(out.stdout)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


Downloader = Callable[[str, Path], None]
"""download(url, part_path): append the rest of ``url`` to ``part_path`` (HTTP Range resume)."""


class StorageApplier:
    def __init__(self, state: StateDir, download: Downloader) -> None:
        self.state = state
        self.download = download
        self._virtual_sizes: dict[str, int] = {}  # cached image file name -> virtual size
        self.seed_facts = FileFacts(state.root / "seed-facts.json", SEED_FACTS_KIND)

    def remember_seeds(self, spec: HostSpec, observed: StorageObserved) -> None:
        """Note which spec each unchanged seed ISO was found equal to, and save the facts.

        The next pass (or the first after a restart) then knows those seeds are in
        sync from one ``stat`` and the spec, without parsing or rendering them.
        """
        for inst in spec.instances:
            seen = observed.seeds.get(inst.id)
            if not isinstance(seen, SeedSeen) or seen.stat is None:
                continue
            key = seed_spec_key(inst)
            if seen.spec_key != key and seen.digest == rendered_seed(inst)[1]:
                self.seed_facts.put(self.state.seed_path(inst.id), seen.stat,
                                    {"digest": seen.digest, "spec": key})
        self.seed_facts.save()

    def apply(self, action: StorageAction) -> None:
        if isinstance(action, FetchImage):
            self.fetch_image(action.image)
        elif isinstance(action, CreateDisk):
            self.create_disk(action.instance_id, action.disk, action.image)
        elif isinstance(action, WriteSeed):
            self.state.instance_dir(action.instance_id).mkdir(parents=True, exist_ok=True)
            write_seed_iso(self.state.seed_path(action.instance_id), action.files)
        elif isinstance(action, RemoveInstanceFiles):
            self.remove_instance_files(action.instance_id, action.retain)
        else:  # pragma: no cover
            raise TypeError(action)

    def fetch_image(self, image: ImageSpec) -> Path:
        """Download, verify (sha256, no backing/data file) and atomically publish an image."""
        final = self.state.image_path(image.sha256, image.format)
        if final.exists():
            return final
        part = final.with_name(final.name + ".part")
        self.state.images_dir.mkdir(parents=True, exist_ok=True)
        log.info("downloading image %s (%d bytes)", image.id, image.size_bytes)
        self.download(image.url, part)
        got = sha256_file(part)
        if got != image.sha256:
            part.unlink(missing_ok=True)
            raise TemporaryError(f"image {image.id}: sha256 mismatch (got {got[:12]}…, "
                                 f"want {image.sha256[:12]}…); download discarded")
        info = qemu_img_info(part, image.format)
        if info.get("backing-filename") or info.get("full-backing-filename") or \
                (info.get("format-specific", {}).get("data", {}) or {}).get("data-file"):
            part.unlink(missing_ok=True)
            raise PermanentError(f"image {image.id}: refers to a backing or data file; refused")
        os.chmod(part, 0o444)
        faults.point("storage.image.before_publish")
        os.replace(part, final)
        self._virtual_sizes[final.name] = int(info.get("virtual-size", 0))
        log.info("image %s cached as %s", image.id, final.name)
        return final

    def _image_virtual_size(self, path: Path, fmt: str) -> int:
        if path.name not in self._virtual_sizes:
            self._virtual_sizes[path.name] = int(qemu_img_info(path, fmt).get("virtual-size", 0))
        return self._virtual_sizes[path.name]

    def create_disk(self, instance_id: str, disk: DiskSpec, image: ImageSpec | None) -> Path:
        """A qcow2 overlay on the cached image (system) or an empty qcow2 (data); never shrinks."""
        target = self.state.disk_path(instance_id, disk.id)
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
        size = disk.size_bytes
        if image is not None:
            backing = self.state.image_path(image.sha256, image.format)
            if not backing.exists():
                raise TemporaryError(f"disk {disk.id}: image {image.id} is not in the cache yet")
            size = max(size, image.virtual_size_bytes, self._image_virtual_size(backing, image.format))
            argv += ["-F", image.format, "-b", str(backing)]
        argv += [str(tmp), str(size)]
        proc.run(argv, timeout=60)
        faults.point("storage.system_disk.before_publish")
        os.replace(tmp, target)
        log.info("created disk %s for %s (%d bytes)", disk.id, instance_id, size)
        return target

    def remove_instance_files(self, instance_id: str, retain: tuple[str, ...] = ()) -> None:
        d = self.state.instance_dir(instance_id)
        if d.resolve().parent != self.state.instances_dir.resolve():
            raise PermanentError(f"refusing to remove {d}: not under the state dir")
        for disk_id in retain:  # snapshots outlive their disk: keep the file that holds them
            keep = self.state.root / "snapshots" / f"{disk_id}.qcow2"
            keep.parent.mkdir(parents=True, exist_ok=True)
            src = self.state.disk_path(instance_id, disk_id)
            if src.exists():
                os.replace(src, keep)
                log.info("system disk %s of %s kept for its snapshots", disk_id, instance_id)
                faults.point("storage.instance_files.after_retain")
        shutil.rmtree(d, ignore_errors=True)
        log.info("removed disks and seed of deleted instance %s", instance_id)


def supports_o_direct(directory: Path) -> bool:
    """True when files in ``directory`` can be opened with O_DIRECT (needed by cache=none)."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".o_direct_probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | getattr(os, "O_DIRECT", 0), 0o600)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
