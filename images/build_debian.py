#!/usr/bin/env python3
"""Build a Debian 12 guest image with real cloud-init and OpenSSH.

    sudo python3 images/build_debian.py --output images/build/debian-12.qcow2

debootstrap installs Debian packages (from the Debian mirror that apt on this
machine already uses, or ``--mirror``) straight into the ext4 partition of a
BIOS disk: an MBR with syslinux's boot code, one bootable partition with
extlinux, the Debian cloud kernel and its initramfs (made by initramfs-tools
in the image), the kernel and getty on the serial console. cloud-init looks
only for a NoCloud seed (the ``cidata`` ISO miniecs attaches), so it neither
waits for nor probes a metadata server; ifupdown is installed, so cloud-init
renders the seed's network-config to /etc/network/interfaces.d, as on Debian's
own cloud images. The default user is Debian's ``debian`` (sudo, no password),
which gets the key pair.

Downloaded packages are kept in ``images/build/debootstrap-cache`` so a
rebuild downloads nothing. Needs root and: debootstrap, extlinux,
syslinux-common, e2fsprogs, fdisk, mount, qemu-utils.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from build_tiny import SYSLINUX_BIOS, SYSLINUX_MBR, bootable_disk, first_existing, run, sha256_file

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
DISK_SIZE = 2 * 1024 ** 3
PART_START = 2048
FS_UUID = "5f1c6a3e-2d4b-4e8f-9a1c-64656269616e"  # fixed: fstab and extlinux name it
FS_LABEL = "debian-root"
PACKAGES = [
    "systemd-sysv", "udev", "kmod", "iproute2", "ifupdown", "netbase", "procps",
    # cloud-init's ifupdown renderer writes routes as `post-up route add ...`
    "net-tools",
    "linux-image-cloud-amd64", "initramfs-tools", "openssh-server", "cloud-init", "sudo",
    "less",
    # cloud-init's locale module runs update-locale
    "locales",
    # debootstrap does not resolve virtual packages: python3-cryptography needs
    # python3-cffi-backend-api-{min,max}, which this one provides
    "python3-cffi-backend",
]
KERNEL_CMDLINE = f"root=UUID={FS_UUID} ro console=tty0 console=ttyS0,115200n8"
CLOUD_CFG = """\
# miniecs: the seed is a NoCloud ISO (label cidata); look nowhere else
datasource_list: [ NoCloud, None ]
"""


def log(msg: str) -> None:
    print(f"build_debian: {msg}", file=sys.stderr, flush=True)


def apt_mirror() -> str:
    """The Debian mirror apt on this machine uses (deb822 or one-line sources)."""
    files = [Path("/etc/apt/sources.list"),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):
            if re.search(r"^Suites:.*\b" + SUITE + r"\b", block, re.M) and \
                    re.search(r"^Types:.*\bdeb\b", block, re.M):
                m = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if m and "security" not in m.group(1):
                    return m.group(1)
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
            if m:
                return m.group(1)
    raise SystemExit(f"build_debian: no apt source for {SUITE} found; pass --mirror")


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def configure(root: Path) -> None:
    """Make the debootstrapped tree a cloud image: no host identity, boot on serial."""
    write(root, "etc/fstab", f"UUID={FS_UUID}\t/\text4\terrors=remount-ro\t0\t1\n")
    write(root, "etc/cloud/cloud.cfg.d/90_miniecs.cfg", CLOUD_CFG)
    write(root, "etc/hostname", "localhost\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    write(root, "etc/network/interfaces",
          "# cloud-init writes the NICs from the seed to interfaces.d\n"
          "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n")
    (root / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
    # a machine id and SSH host keys per instance, made on first boot
    write(root, "etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # cloud-init's ssh module makes the host keys; no reverse DNS wait at login
    write(root, "etc/ssh/sshd_config.d/miniecs.conf", "UseDNS no\n")
    # cloud-init's locale module sets Debian's default en_US.UTF-8 with update-locale,
    # which refuses a locale that was never generated
    write(root, "etc/locale.gen", "en_US.UTF-8 UTF-8\n")
    run(["chroot", str(root), "locale-gen"])
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=False, capture_output=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def install_bootloader(root: Path) -> None:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError("debootstrap left no kernel or initramfs in /boot")
    ext = root / "boot/extlinux"
    ext.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(first_existing(SYSLINUX_BIOS) / "ldlinux.c32", ext / "ldlinux.c32")
    write(root, "boot/extlinux/extlinux.conf",
          "DEFAULT debian\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\n"
          f"LABEL debian\n  LINUX /boot/{kernels[-1].name}\n  INITRD /boot/{initrds[-1].name}\n"
          f"  APPEND {KERNEL_CMDLINE}\n")
    run(["extlinux", "--install", str(ext)])


def build(output: Path, mirror: str, cache: Path, compress: bool) -> str:
    if os.geteuid() != 0:
        raise SystemExit("build_debian: must run as root (debootstrap, loop devices, mount)")
    for tool in ("debootstrap", "sfdisk", "losetup", "mkfs.ext4", "mount", "extlinux",
                 "qemu-img", "chroot"):
        if not shutil.which(tool):
            raise SystemExit(f"build_debian: {tool} not found (run `make deps`)")
    t0 = time.monotonic()
    mbr = first_existing(SYSLINUX_MBR).read_bytes()
    cache.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    # no 64bit, no metadata_csum_seed: extlinux reads neither
    mkfs = ["mkfs.ext4", "-q", "-F", "-L", FS_LABEL, "-U", FS_UUID, "-O", "^64bit"]
    with bootable_disk(output, size=DISK_SIZE, part_start=PART_START, mbr=mbr,
                       sfdisk_header="label: dos\n", mkfs=mkfs, compress=compress,
                       prefix="miniecs-debian-", tmp_dir=output.parent) as mnt:
        log(f"debootstrap {SUITE} ({len(PACKAGES)} extra packages)")
        t1 = time.monotonic()
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             f"--cache-dir={cache}", SUITE, str(mnt), mirror],
            capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            debootstrap_log = mnt / "debootstrap/debootstrap.log"
            if debootstrap_log.exists():
                tail += "\n" + debootstrap_log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"debootstrap failed:\n{tail}")
        log(f"debootstrap took {time.monotonic() - t1:.0f}s")
        configure(mnt)
        install_bootloader(mnt)
    digest = sha256_file(output)
    log(f"wrote {output} ({output.stat().st_size} bytes) in {time.monotonic() - t0:.0f}s")
    return digest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", "-o", type=Path, default=HERE / "build" / "debian-12.qcow2")
    ap.add_argument("--mirror", help="Debian mirror URL (default: the one apt uses here)")
    ap.add_argument("--cache-dir", type=Path, default=HERE / "build" / "debootstrap-cache",
                    help="Where downloaded .debs are kept between builds")
    ap.add_argument("--compress", action="store_true", help="write a compressed qcow2")
    args = ap.parse_args(argv)
    digest = build(args.output.resolve(), args.mirror or apt_mirror(), args.cache_dir.resolve(),
                   args.compress)
    print(f"{digest}  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
