#!/usr/bin/env python3
"""Build the miniecs "tiny" guest image: a bootable qcow2 made from Debian
packages installed on the build machine.

    sudo python3 images/build_tiny.py --output images/build/tiny.qcow2

The disk is a cloud-image-like BIOS disk: an MBR with syslinux's boot code
and one bootable ext4 partition holding extlinux, the Debian cloud kernel,
an initramfs generated here (static busybox, the few driver modules the
guest needs, a small /init) and a busybox + dropbear root filesystem whose
init reads the NoCloud seed (see images/tiny/ and docs/seed.md).

Needs root (loop devices, mount) and: linux-image-cloud-amd64,
busybox-static, dropbear-bin, extlinux, syslinux-common, e2fsprogs, fdisk
(sfdisk), mount (losetup), qemu-utils.  Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "tiny"

# Loaded by the initramfs in this order (dependencies found in modules.dep
# are put in front of the module that needs them).  The two lists load side
# by side: ATA probing waits on the emulated hardware while the virtio
# devices' ACPI interrupt links are set up.
MODULES = [
    # virtio: disk and NIC
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    # ACPI power button -> input event device read by busybox acpid
    "button",
    "evdev",
    # entropy from a virtio-rng device when the VM has one
    "virtio_rng",
]
SEED_MODULES = [
    # the NoCloud seed: an ISO 9660 CD-ROM on the i440fx PIIX IDE controller
    "scsi_common",
    "scsi_mod",
    "libata",
    "ata_piix",
    "cdrom",
    "sr_mod",
    "isofs",
]

DISK_SIZE = 512 * 1024 * 1024
PART_START = 2048  # sectors (1 MiB)
SECTOR = 512
DISK_ID = "0x6d696e69"  # "mini"
FS_UUID = "8d3c7e52-5e0b-4c1e-9a77-6d696e696563"
FS_HASH_SEED = "4e1a2b3c-5d6e-4f70-8192-a3b4c5d6e7f8"
FS_LABEL = "miniecs-root"
# Keep KASLR: "nokaslr" saves the decompressor's relocation pass, but then a
# reboot inside the same QEMU decompresses the kernel over the very pages
# that held the previous kernel's code, which TCG makes much slower
# (measured: cold boot no faster in practice, reboot ~10 s slower).
KERNEL_CMDLINE = "root=/dev/vda1 rw console=ttyS0 quiet"
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))

DROPBEAR = ["/usr/sbin/dropbear", "/usr/bin/dropbearkey"]
BUSYBOX = "/usr/bin/busybox"
SYSLINUX_MBR = ["/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/EXTLINUX/mbr.bin"]
SYSLINUX_BIOS = ["/usr/lib/syslinux/modules/bios"]


def log(msg: str) -> None:
    print(f"build_tiny: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}".rstrip()
        )
    return proc


def first_existing(paths: list[str]) -> Path:
    for p in paths:
        if Path(p).exists():
            return Path(p)
    raise FileNotFoundError(f"none of {paths} exists")


# ---- kernel and modules ------------------------------------------------------


def find_kernel(version: str | None) -> tuple[str, Path, Path]:
    """(version, vmlinuz, module dir); prefers the newest *-cloud-amd64."""
    moddirs = [Path("/usr/lib/modules"), Path("/lib/modules")]
    if version:
        candidates = [version]
    else:
        found = set()
        for d in moddirs:
            if d.is_dir():
                found.update(p.name for p in d.iterdir() if (p / "modules.dep").exists())
        found = {v for v in found if Path(f"/boot/vmlinuz-{v}").exists()}
        if not found:
            raise RuntimeError("no kernel with modules found (install linux-image-cloud-amd64)")

        def key(v: str):
            nums = [int(x) for x in re.findall(r"\d+", v)]
            return ("cloud" in v, nums)

        candidates = sorted(found, key=key, reverse=True)
    v = candidates[0]
    vmlinuz = Path(f"/boot/vmlinuz-{v}")
    for d in moddirs:
        if (d / v / "modules.dep").exists():
            if not vmlinuz.exists():
                raise RuntimeError(f"{vmlinuz} is missing")
            return v, vmlinuz, d / v
    raise RuntimeError(f"no modules.dep for kernel {v}")


def modname(path: str) -> str:
    name = os.path.basename(path)
    name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", name)
    return name.replace("-", "_")


def resolve_modules(moddir: Path, wanted: list[str]) -> list[tuple[str, Path]]:
    """Load order for `wanted` (plus dependencies), as (name, file)."""
    deps: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        n = modname(mod)
        files[n] = mod
        deps[n] = [modname(d) for d in rest.split()]
    builtin = set()
    if (moddir / "modules.builtin").exists():
        builtin = {modname(l) for l in (moddir / "modules.builtin").read_text().split()}

    order: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in order:
            return
        if n in builtin:
            return
        if n not in files:
            raise RuntimeError(f"module {n} not found in {moddir}/modules.dep")
        if n in visiting:
            raise RuntimeError(f"module dependency cycle at {n}")
        visiting.add(n)
        # modules.dep lists the deepest dependency last
        for d in reversed(deps[n]):
            visit(d)
        visiting.discard(n)
        order.append(n)

    for n in wanted:
        n = n.replace("-", "_")
        if n in builtin:
            log(f"module {n} is built into the kernel")
            continue
        visit(n)
    return [(n, moddir / files[n]) for n in order]


def module_bytes(path: Path) -> bytes:
    """The module as a plain ELF .ko (busybox insmod reads no compression)."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        if not shutil.which("zstd"):
            raise RuntimeError(f"{path} is zstd-compressed; install zstd")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, stdout=subprocess.PIPE).stdout
    return data


# ---- initramfs (newc cpio written here, gzip) --------------------------------


class Cpio:
    """A deterministic cpio "newc" archive."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes, int]] = {}  # path -> (mode, data, rdev)

    def dir(self, path: str, mode: int = 0o755) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.entries:
                self.entries[p] = (stat.S_IFDIR | mode, b"", 0)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self.entries[path] = (stat.S_IFREG | mode, data, 0)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self.entries[path] = (stat.S_IFLNK | 0o777, target.encode(), 0)

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self.entries[path] = (stat.S_IFCHR | mode, b"", os.makedev(major, minor))

    def bytes(self) -> bytes:
        out = io.BytesIO()

        def entry(ino: int, name: str, mode: int, data: bytes, rdev: int) -> None:
            nameb = name.encode() + b"\0"
            nlink = 2 if stat.S_ISDIR(mode) else 1
            hdr = "070701" + "".join(
                f"{v:08x}"
                for v in (
                    ino, mode, 0, 0, nlink, EPOCH, len(data), 0, 0,
                    os.major(rdev), os.minor(rdev), len(nameb), 0,
                )
            )
            out.write(hdr.encode() + nameb)
            out.write(b"\0" * (-(110 + len(nameb)) % 4))
            out.write(data)
            out.write(b"\0" * (-len(data) % 4))

        for ino, name in enumerate(sorted(self.entries), start=1):
            mode, data, rdev = self.entries[name]
            entry(ino, name, mode, data, rdev)
        entry(0, "TRAILER!!!", 0, b"", 0)
        return out.getvalue()


def build_initramfs(modules: list[tuple[str, Path]], seed_modules: list[tuple[str, Path]]) -> bytes:
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", (ASSETS / "initramfs-init").read_bytes(), 0o755)
    for name, path in modules + seed_modules:
        c.file(f"lib/modules/{name}.ko", module_bytes(path), 0o644)
    c.file("lib/modules/load-order", ("\n".join(n for n, _ in modules) + "\n").encode())
    c.file("lib/modules/load-order.seed", ("\n".join(n for n, _ in seed_modules) + "\n").encode())
    raw = c.bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


# ---- root filesystem ---------------------------------------------------------


def shared_libs(binaries: list[str]) -> list[str]:
    """Paths (as the loader looks them up) of the shared libraries needed."""
    libs: list[str] = []
    for b in binaries:
        out = run(["ldd", b]).stdout
        for line in out.splitlines():
            line = line.strip()
            m = re.match(r"\S+ => (/\S+) \(", line) or re.match(r"(/\S+) \(", line)
            if m and m.group(1) not in libs:
                libs.append(m.group(1))
    return libs


def write(root: Path, rel: str, data: str | bytes, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink():  # an applet link: never write through it into busybox
        p.unlink()
    if isinstance(data, str):
        data = data.encode()
    p.write_bytes(data)
    os.chmod(p, mode)


def copy(root: Path, src: str | Path, rel: str, mode: int | None = None) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink():
        p.unlink()
    shutil.copyfile(src, p)  # follows symlinks: the real content
    os.chmod(p, mode if mode is not None else (os.stat(src).st_mode & 0o7777))


def populate_root(root: Path, vmlinuz: Path, initrd: bytes, cmdline: str) -> None:
    for d, mode in [
        ("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
        ("lib", 0o755), ("lib64", 0o755), ("etc", 0o755), ("dev", 0o755),
        ("proc", 0o555), ("sys", 0o555), ("run", 0o755), ("tmp", 0o1777),
        ("mnt", 0o755), ("root", 0o700), ("home", 0o755), ("var/log", 0o755),
        ("var/lib/miniecs-tiny", 0o755), ("var/tmp", 0o1777), ("etc/dropbear", 0o700),
        ("boot/extlinux", 0o755),
    ]:
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    os.symlink("../run", root / "var/run")
    os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    # busybox and its applets
    copy(root, BUSYBOX, "bin/busybox", 0o755)
    applets = run([BUSYBOX, "--list-full"]).stdout.split()
    for a in sorted(applets):
        p = root / a
        if a == "bin/busybox" or p.exists() or p.is_symlink():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", p)

    # dropbear and the libraries it links
    for b in DROPBEAR:
        copy(root, b, b, 0o755)
    for lib in shared_libs(DROPBEAR):
        copy(root, lib, lib, 0o755 if "ld-linux" in lib else 0o644)

    # the guest's own files (init scripts, seed parsers, acpi handler)
    src = ASSETS / "rootfs"
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if path.is_dir():
            (root / rel).mkdir(parents=True, exist_ok=True)
            continue
        data = path.read_bytes()
        write(root, rel, data, 0o755 if data.startswith(b"#!") else 0o644)

    # poweroff/reboot/halt: see usr/lib/miniecs-tiny/shutdown
    for name in ("poweroff", "reboot", "halt"):
        (root / "sbin" / name).unlink(missing_ok=True)
        os.symlink("/usr/lib/miniecs-tiny/shutdown", root / "sbin" / name)

    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    write(root, "etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o600)
    write(root, "etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    write(root, "etc/shells", "/bin/sh\n/bin/ash\n")
    write(root, "etc/hostname", "localhost\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    write(root, "etc/resolv.conf", "")
    write(root, "etc/fstab", "/dev/vda1\t/\text4\trw\t0\t1\n")

    # kernel, initramfs, extlinux configuration
    copy(root, vmlinuz, "boot/vmlinuz", 0o644)
    write(root, "boot/initrd.img", initrd)
    copy(root, first_existing(SYSLINUX_BIOS) / "ldlinux.c32", "boot/extlinux/ldlinux.c32", 0o644)
    write(
        root,
        "boot/extlinux/extlinux.conf",
        "DEFAULT tiny\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL tiny\n  LINUX /boot/vmlinuz\n  INITRD /boot/initrd.img\n"
        f"  APPEND {cmdline}\n",
    )

    # fixed timestamps (best effort determinism)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))


# ---- the disk ------------------------------------------------------------------


def attach_loop(path: Path, offset: int, size: int) -> str:
    """A loop device over path[offset:offset+size]; retried, as another
    process may take the free device between the lookup and the attach."""
    for attempt in range(5):
        proc = subprocess.run(
            ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), str(path)],
            capture_output=True, text=True,
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"losetup failed: {proc.stderr.strip()}")


@contextlib.contextmanager
def bootable_disk(output: Path, *, size: int, part_start: int, mbr: bytes, sfdisk_header: str,
                  mkfs: list[str], mkfs_env: dict[str, str] | None = None, compress: bool,
                  prefix: str, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A BIOS disk with one bootable ext4 partition, mounted for the body to fill.

    The body gets the mount point; when it returns, the file system is
    unmounted, syslinux's boot code goes into the MBR and the raw disk is
    converted to qcow2 and moved to ``output`` in one rename.  On an error
    nothing is left behind: no mount, loop device, temporary file or output.
    """
    if len(mbr) > 440:
        raise RuntimeError("mbr.bin is larger than 440 bytes")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_dir))
    qcow = output.parent / f".{output.name}.tmp-{os.getpid()}"
    mnt = tmp / "mnt"
    loop = None
    mounted = False
    try:
        raw = tmp / "disk.raw"
        with open(raw, "wb") as f:
            f.truncate(size)
        run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
            input=f"{sfdisk_header}unit: sectors\n\nstart={part_start}, type=83, bootable\n")
        loop = attach_loop(raw, part_start * SECTOR, size - part_start * SECTOR)
        run([*mkfs, loop], **({"env": mkfs_env} if mkfs_env is not None else {}))
        mnt.mkdir()
        run(["mount", "-t", "ext4", loop, str(mnt)])
        mounted = True
        yield mnt
        os.sync()
        run(["umount", str(mnt)])
        mounted = False
        run(["losetup", "-d", loop])
        loop = None
        with open(raw, "r+b") as f:
            f.write(mbr)
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", *(["-c"] if compress else []),
             str(raw), str(qcow)])
        os.replace(qcow, output)
    finally:
        qcow.unlink(missing_ok=True)
        if mounted:
            # a chroot build may leave /proc, /sys or /dev mounted in the target
            for sub in ("proc", "sys", "dev/pts", "dev"):
                if os.path.ismount(mnt / sub):
                    subprocess.run(["umount", "-l", str(mnt / sub)], capture_output=True)
            for args in (["umount", str(mnt)], ["umount", "-l", str(mnt)]):
                if subprocess.run(args, capture_output=True).returncode == 0:
                    break
                time.sleep(0.5)
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_static(path: str) -> bool:
    """True when the ELF file has no program interpreter (PT_INTERP)."""
    import struct

    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            raise RuntimeError(f"{path} is not a 64-bit ELF file")
        phoff, = struct.unpack_from("<Q", hdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))



def build(output: Path, kernel_version: str | None, compress: bool, append: str = "") -> str:
    if os.geteuid() != 0:
        raise SystemExit("build_tiny: must run as root (loop devices, mount)")
    for tool in ("sfdisk", "losetup", "mkfs.ext4", "mount", "umount", "extlinux", "qemu-img", "ldd"):
        if not shutil.which(tool):
            raise SystemExit(f"build_tiny: {tool} not found")
    for f in [BUSYBOX] + DROPBEAR:
        if not Path(f).exists():
            raise SystemExit(f"build_tiny: {f} not found (busybox-static, dropbear-bin)")
    if not is_static(BUSYBOX):
        raise SystemExit(f"build_tiny: {BUSYBOX} is not static: install busybox-static")

    t0 = time.monotonic()
    version, vmlinuz, moddir = find_kernel(kernel_version)
    modules = resolve_modules(moddir, MODULES)
    seed_modules = [m for m in resolve_modules(moddir, SEED_MODULES) if m not in modules]
    log(f"kernel {version}; modules: {' '.join(n for n, _ in modules)}; "
        f"for the seed: {' '.join(n for n, _ in seed_modules)}")
    initrd = build_initramfs(modules, seed_modules)
    log(f"initramfs: {len(initrd)} bytes")
    mbr = first_existing(SYSLINUX_MBR).read_bytes()
    mkfs = [
        # no 64bit: extlinux does not read it; 4 KiB blocks and few inodes
        "mkfs.ext4", "-q", "-F", "-T", "default", "-b", "4096", "-N", "8192", "-m", "0",
        "-L", FS_LABEL, "-U", FS_UUID, "-O", "^64bit",
        "-E", f"hash_seed={FS_HASH_SEED},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
    ]
    with bootable_disk(output, size=DISK_SIZE, part_start=PART_START, mbr=mbr,
                       sfdisk_header=f"label: dos\nlabel-id: {DISK_ID}\n", mkfs=mkfs,
                       mkfs_env={**os.environ, "E2FSPROGS_FAKE_TIME": str(EPOCH)},
                       compress=compress, prefix="miniecs-tiny-") as mnt:
        populate_root(mnt, vmlinuz, initrd, f"{KERNEL_CMDLINE} {append}".strip())
        run(["extlinux", "--install", str(mnt / "boot/extlinux")])
    digest = sha256_file(output)
    log(f"wrote {output} ({output.stat().st_size} bytes) in {time.monotonic() - t0:.1f}s")
    return digest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", "-o", type=Path, default=HERE / "build" / "tiny.qcow2")
    ap.add_argument("--kernel-version", help="kernel under /usr/lib/modules (default: newest cloud kernel)")
    ap.add_argument("--compress", action="store_true", help="write a compressed qcow2")
    ap.add_argument(
        "--append", default="",
        help="more kernel command line (e.g. miniecs.debug: time stamps on the console lines)",
    )
    args = ap.parse_args(argv)
    digest = build(args.output.resolve(), args.kernel_version, args.compress, args.append)
    print(f"{digest}  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
