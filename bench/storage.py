"""Storage benchmark: the agent's own disk steps beside full copies and external overlays.

    .venv/bin/python bench/storage.py [--sizes 1,4,8] [--dir DIR]

* snapshot create and delete (``DiskReconciler``'s offline path, ``qemu-img snapshot``
  through ``--image-opts``) on a 20 GiB sparse qcow2 with N GiB written, beside
  ``qemu-img convert`` (a full copy of the same disk) and an external qcow2 overlay
  (``qemu-img create -b``: the file-level work of ``virsh snapshot-create-as
  --disk-only`` without a running domain);
* system disk clone (``StorageApplier.create_disk``: a qcow2 overlay on the cached image)
  from a 1 GiB and a 10 GiB image, beside ``qemu-img convert`` of the image;
* disk from snapshot (``copy_snapshot``: a flattened copy) beside ``qemu-img convert``.

With ``--api`` (root; a one-host rig with controller and agent, run it under the guests
lock): the API call → snapshot accomplished and disk-from-snapshot → Available through
the real controller and agent, and the live snapshot of a running domain's disk (the
agent's QMP internal snapshot) beside ``virsh snapshot-create-as --disk-only`` on the
same disk of the same domain.

Prints one line per measurement and the ratios, and ends with one ``HEADLINE`` line.
Needs free space of about twice the largest size written (the full copy).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.disks import DiskFile, DiskReconciler, copy_snapshot  # noqa: E402
from agent.records import OperationLog  # noqa: E402
from agent.spec import DiskSpec, ImageSpec  # noqa: E402
from agent.state import StateDir  # noqa: E402
from agent.storage import StorageApplier, sha256_file  # noqa: E402
from agent.testing import FakeLibvirt  # noqa: E402

GIB = 1 << 30
DISK_GIB = 20


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def fill(path: Path, gib: int) -> None:
    """Write ``gib`` GiB of non-zero data at the start of a qcow2 (pattern, not zeros)."""
    for i in range(gib):
        sh("qemu-io", "-f", "qcow2", "-c", f"write -P {1 + i % 250} {i}G 1G", str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,8", help="GiB written on the 20 GiB disk")
    ap.add_argument("--images", default="1,10", help="image virtual sizes in GiB")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--api", action="store_true",
                    help="also measure through a rig controller+agent and virsh (root)")
    args = ap.parse_args()
    api_line = api_figures() if args.api else ""
    sizes = [int(x) for x in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mecs-bench-", dir=args.dir))
    state = StateDir(work / "state")
    state.ensure()
    dr = DiskReconciler(state, FakeLibvirt(), OperationLog(state.operations_json))
    results: dict[str, float] = {}
    try:
        disk = work / "d-bench.qcow2"
        sh("qemu-img", "create", "-q", "-f", "qcow2", str(disk), f"{DISK_GIB}G")
        written = 0
        f = DiskFile("d-bench", disk, "data")
        for gib in sizes:
            fill(disk, gib) if written == 0 else [
                sh("qemu-io", "-f", "qcow2", "-c", f"write -P 7 {i}G 1G", str(disk))
                for i in range(written, gib)]
            written = gib
            n = [0]

            def snap_cycle() -> None:
                n[0] += 1
                name = f"s-bench{n[0]}"
                t0 = time.perf_counter()
                dr._take_snapshot(f, name, {})
                results.setdefault(f"create@{gib}", []).append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                dr._delete_snapshot(f, name, {})
                results.setdefault(f"delete@{gib}", []).append(time.perf_counter() - t0)

            for _ in range(5):
                snap_cycle()
            results[f"create@{gib}"] = statistics.median(results[f"create@{gib}"])
            results[f"delete@{gib}"] = statistics.median(results[f"delete@{gib}"])
            overlay = work / "overlay.qcow2"

            def external() -> None:
                overlay.unlink(missing_ok=True)
                sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
                   str(overlay))
            results[f"overlay@{gib}"] = timed(external)
            overlay.unlink(missing_ok=True)
            full = work / "full.qcow2"
            results[f"convert@{gib}"] = timed(lambda: sh("qemu-img", "convert", "-f", "qcow2",
                                                         "-O", "qcow2", str(disk), str(full)), 1)
            full.unlink(missing_ok=True)
            # disk from snapshot: a flattened copy of the snapshot (the agent's copy_snapshot)
            dr._take_snapshot(f, "s-benchsrc", {})
            copy = work / "copy.qcow2"
            results[f"fromsnap@{gib}"] = timed(lambda: copy_snapshot(disk, "s-benchsrc", copy), 1)
            copy.unlink(missing_ok=True)
            dr._delete_snapshot(f, "s-benchsrc", {})
            print(f"{gib} GiB written: snapshot create {results[f'create@{gib}'] * 1000:.1f} ms, "
                  f"delete {results[f'delete@{gib}'] * 1000:.1f} ms; external overlay "
                  f"{results[f'overlay@{gib}'] * 1000:.1f} ms; qemu-img convert full copy "
                  f"{results[f'convert@{gib}']:.2f} s (x{results[f'convert@{gib}'] / results[f'create@{gib}']:.0f} "
                  f"the snapshot); disk from snapshot {results[f'fromsnap@{gib}']:.2f} s", flush=True)

        applier = StorageApplier(state, download=lambda url, part: None)
        for gib in [int(x) for x in args.images.split(",")]:
            src = work / f"img{gib}.qcow2"
            sh("qemu-img", "create", "-q", "-f", "qcow2", str(src), f"{gib}G")
            sh("qemu-io", "-f", "qcow2", "-c", f"write -P 9 0 {min(gib, 1) * 256}M", str(src))
            digest = sha256_file(src)
            cached = state.image_path(digest, "qcow2")
            state.images_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, cached)
            image = ImageSpec(id=f"m-bench{gib}", sha256=digest, format="qcow2",
                              size_bytes=src.stat().st_size, virtual_size_bytes=gib * GIB,
                              url="unused")
            n = [0]

            def clone() -> None:
                n[0] += 1
                applier.create_disk(f"i-bench{gib}x{n[0]}",
                                    DiskSpec(id=f"d-clone{n[0]}", role="system",
                                             size_bytes=gib * GIB, image_id=image.id), image)
            results[f"clone@{gib}"] = timed(clone)
            full = work / "fullimg.qcow2"
            results[f"imgconvert@{gib}"] = timed(lambda: sh(
                "qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(cached), str(full)), 3)
            full.unlink(missing_ok=True)
            print(f"system disk clone from a {gib} GiB image: {results[f'clone@{gib}'] * 1000:.1f}"
                  f" ms; qemu-img convert of the image {results[f'imgconvert@{gib}'] * 1000:.0f} ms "
                  f"(x{results[f'imgconvert@{gib}'] / results[f'clone@{gib}']:.1f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    creates = [results[f"create@{g}"] for g in sizes]
    deletes = [results[f"delete@{g}"] for g in sizes]
    clones = [v for k, v in results.items() if k.startswith("clone@")]
    big = sizes[-1]
    print(f"HEADLINE snapshot create {min(creates) * 1000:.0f}-{max(creates) * 1000:.0f} ms and "
          f"delete {min(deletes) * 1000:.0f}-{max(deletes) * 1000:.0f} ms on a 20 GiB disk with "
          f"{'/'.join(map(str, sizes))} GiB written (x{creates[-1] / creates[0]:.1f} from the "
          f"smallest to the largest: qcow2 bumps one refcount per allocated cluster; a full "
          f"qemu-img convert of the {big} GiB one takes "
          f"x{results[f'convert@{big}'] / results[f'create@{big}']:.0f}); "
          f"system disk clone {min(clones) * 1000:.0f}-{max(clones) * 1000:.0f} ms whatever "
          f"the image size{api_line}")


def api_figures(written_gib: int = 1, repeat: int = 5) -> str:
    """Figures through a real controller and agent in a one-host rig; returns a HEADLINE part."""
    from agent.disks import DomainDisks
    from agent.libvirt_conn import LibvirtConnection
    from tests.rig.cloud import Cloud

    def wait(cloud, path: str, field: str, want: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cloud.get(path)[field] == want:
                return time.perf_counter()
            time.sleep(0.01)
        raise RuntimeError(f"{path} never became {want}")

    old = Cloud.load("bstor")
    if old:
        old.down()
    cloud = Cloud(name="bstor")
    domain = "mecs-bench-virsh"
    try:
        cloud.up(hosts=1)
        host = next(iter(cloud.rig.hosts.values()))
        disk = cloud.post("/disks", {"size_gib": DISK_GIB, "zone_id": "zone-a"})
        wait(cloud, f"/disks/{disk['id']}", "status", "Available")
        path = host.agent_state_dir / "disks" / f"{disk['id']}.qcow2"
        fill(path, written_gib)
        api, snaps = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            snap = cloud.post("/snapshots", {"disk_id": disk["id"]})
            api.append(wait(cloud, f"/snapshots/{snap['id']}", "status", "accomplished") - t0)
            snaps.append(snap["id"])
        t0 = time.perf_counter()
        copy = cloud.post("/disks", {"snapshot_id": snaps[0]})
        from_snap = wait(cloud, f"/disks/{copy['id']}", "status", "Available", 600) - t0
        print(f"API: POST /snapshots -> accomplished {statistics.median(api) * 1000:.0f} ms "
              f"(median of {repeat}, {DISK_GIB} GiB disk, {written_gib} GiB written); "
              f"POST /disks from snapshot -> Available {from_snap:.2f} s", flush=True)
        for sid in snaps:
            cloud.delete(f"/snapshots/{sid}")
        cloud.delete(f"/disks/{copy['id']}")
        cloud.delete(f"/disks/{disk['id']}")

        # live: one running domain (no OS needed) with a 20 GiB disk, N GiB written
        live = host.path / "bench-live.qcow2"
        sh("qemu-img", "create", "-q", "-f", "qcow2", str(live), f"{DISK_GIB}G")
        fill(live, written_gib)
        xml = (f"<domain type='qemu'><name>{domain}</name><memory unit='MiB'>64</memory>"
               "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
               "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
               f"<source file='{live}'/><target dev='vda' bus='virtio'/></disk>"
               "</devices></domain>")
        xml_file = host.path / "bench-live.xml"
        xml_file.write_text(xml)
        host.virsh("create", str(xml_file))
        state = StateDir(host.path / "bench-state")
        state.ensure()
        dr = DiskReconciler(state, LibvirtConnection(host.libvirt_uri),
                            OperationLog(state.operations_json))
        users = {str(live): DomainDisks(domain, True, {str(live): ("vda", "")})}
        f = DiskFile("d-benchlive", live, "data")
        ours, theirs = [], []
        for i in range(repeat):
            t0 = time.perf_counter()
            dr._take_snapshot(f, f"s-live{i}", users)
            ours.append(time.perf_counter() - t0)
        for i in range(repeat):
            t0 = time.perf_counter()
            host.virsh("snapshot-create-as", domain, f"ext{i}", "--disk-only", "--no-metadata",
                       "--atomic", "--diskspec", f"vda,file={host.path}/bench-ext{i}.qcow2")
            theirs.append(time.perf_counter() - t0)
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"live snapshot of a running domain's disk: agent (QMP internal) {o * 1000:.1f} ms,"
              f" virsh snapshot-create-as --disk-only {t * 1000:.1f} ms (agent x{o / t:.2f} "
              f"of virsh)", flush=True)
        return (f"; API->accomplished {statistics.median(api) * 1000:.0f} ms (target <500); "
                f"disk from snapshot via API {from_snap:.2f} s; live snapshot agent "
                f"{o * 1000:.0f} ms vs virsh --disk-only {t * 1000:.0f} ms (x{o / t:.2f})")
    finally:
        if cloud.rig is not None:
            for h in cloud.rig.hosts.values():
                h.virsh("destroy", domain, check=False)
        cloud.down()


if __name__ == "__main__":
    main()
