"""Is this machine ready to be a miniecs hypervisor? Prints one JSON object.

``miniecs host add`` copies this file to the host and runs it with the host's
own ``python3`` before installing anything, so it uses the standard library
only and imports nothing from miniecs. Run by hand::

    python3 hostcheck.py [--libvirt-uri qemu:///system]

``problems`` lists what stops the agent from working, each with the fix.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
MODULES = ("bridge", "vxlan", "br_netfilter")
LIBVIRT_PACKAGES = "libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils"
# tool -> Debian package that has it
TOOLS = {
    "qemu-img": "qemu-utils", "ip": "iproute2", "iptables-restore": "iptables",
    "ipset": "ipset", "dnsmasq": "dnsmasq-base", "nsenter": "util-linux",
    "setsid": "util-linux",
}
SBIN = ("/usr/sbin", "/sbin")


def which(tool: str) -> str | None:
    return shutil.which(tool)


def kvm_state() -> str:
    """``usable``, ``missing`` or why /dev/kvm cannot be used (the agent's own probe then
    decides kvm or qemu by booting a firmware; this only says whether KVM can be tried)."""
    if not os.path.exists("/dev/kvm"):
        return "missing"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"not accessible ({exc.strerror})"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return f"ioctl failed ({exc.strerror})"
    finally:
        os.close(fd)
    return "usable" if version == KVM_API_VERSION else f"unexpected KVM API {version}"


# what a module, once active, shows even when it is built into the kernel
MODULE_SIGNS = {"br_netfilter": "/proc/sys/net/bridge"}


def module_state(name: str) -> str:
    if os.path.isdir(f"/sys/module/{name}") or os.path.exists(MODULE_SIGNS.get(name, "/-")):
        return "loaded"
    try:
        with open(f"/lib/modules/{platform.release()}/modules.builtin") as f:
            if any(line.rsplit("/", 1)[-1].split(".")[0].replace("-", "_") == name
                   for line in f):
                return "built-in"
    except OSError:
        pass
    modprobe = which("modprobe") or next((f"{d}/modprobe" for d in SBIN
                                          if os.path.exists(f"{d}/modprobe")), None)
    if modprobe and subprocess.run([modprobe, "-n", "-q", name], capture_output=True,
                                   timeout=30).returncode == 0:
        return "loadable"
    return "missing"


def libvirt_answers(uri: str) -> tuple[bool, str]:
    try:
        out = subprocess.run(["virsh", "-q", "-c", uri, "version"], capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "virsh timed out"
    lines = (out.stdout if out.returncode == 0 else out.stderr + out.stdout).strip().splitlines()
    return out.returncode == 0, lines[-1] if lines else f"exit {out.returncode}"


def check(libvirt_uri: str) -> dict:
    problems: list[str] = []
    result: dict = {
        "hostname": platform.node().split(".")[0],
        "machine": platform.machine(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "uid": os.getuid(),
        "systemd": os.path.isdir("/run/systemd/system"),
        "kvm": kvm_state(),
    }
    if os.getuid() != 0:
        problems.append("not running as root")
    try:
        import ensurepip  # noqa: F401 - only its presence matters
        import venv  # noqa: F401
        result["venv"] = True
    except ImportError:
        result["venv"] = False
        problems.append("python3 cannot make virtualenvs: apt-get install python3-venv")
    virsh, daemon = which("virsh"), which("libvirtd") or which("virtqemud")
    result["virsh"], result["libvirtd"] = virsh, daemon
    if not virsh or not daemon:
        missing = " and ".join(n for n, p in (("virsh", virsh), ("libvirtd", daemon)) if not p)
        problems.append(f"libvirt is not installed (no {missing} on PATH): "
                        f"apt-get install {LIBVIRT_PACKAGES}")
        result["libvirt"] = "missing"
    else:
        ok, detail = libvirt_answers(libvirt_uri)
        result["libvirt"] = detail
        if not ok:
            problems.append(f"libvirtd does not answer at {libvirt_uri} ({detail}): "
                            "start it (systemctl enable --now libvirtd)")
    if not which(f"qemu-system-{platform.machine()}"):
        problems.append(f"no qemu-system-{platform.machine()}: apt-get install qemu-system-x86")
    result["modules"] = {m: module_state(m) for m in MODULES}
    for name, state in result["modules"].items():
        if state == "missing":
            problems.append(f"kernel module {name} is neither loaded nor loadable")
    missing_tools = {t: p for t, p in TOOLS.items() if not which(t)}
    if missing_tools:
        problems.append(f"missing {', '.join(missing_tools)}: apt-get install "
                        f"{' '.join(sorted(set(missing_tools.values())))}")
    # the agent writes the anti-spoofing nftables table through libnftables (agent/nft.py)
    result["libnftables"] = nftables_library()
    if not result["libnftables"]:
        problems.append("missing libnftables.so.1: apt-get install libnftables1")
    result["problems"] = problems
    return result


def nftables_library() -> bool:
    import ctypes
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libvirt-uri", default="qemu:///system")
    args = parser.parse_args(argv)
    json.dump(check(args.libvirt_uri), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
