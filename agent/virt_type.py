"""Choose the virt type: ``kvm`` only where a KVM guest really runs, else ``qemu`` (TCG).

Where /dev/kvm opens and even accepts KVM_CREATE_VM but guests crawl or never
run (nested setups), a plain capability check lies. ``auto`` therefore boots
the firmware of a diskless KVM guest (SeaBIOS to "No bootable device", about
0.3 s where KVM works) under a short deadline and falls back to qemu when it
does not finish in time. The verdict is cached in the state dir per boot.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from agent import proc
from agent.errors import CommandError
from agent.state import StateDir, read_json, write_json_atomic

log = logging.getLogger(__name__)

PROBE_BUDGET_S = 3.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def probe_kvm(budget_s: float = PROBE_BUDGET_S) -> tuple[bool, str]:
    """(True, why) when a KVM guest's firmware runs to its end within ``budget_s`` seconds."""
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    qemu = f"qemu-system-{platform.machine() or 'x86_64'}"
    with tempfile.TemporaryDirectory(prefix="miniecs-kvm-probe-") as tmp:
        debug = Path(tmp) / "bios.log"
        argv = [qemu, "-accel", "kvm", "-m", "32", "-display", "none", "-nodefaults",
                "-no-user-config", "-debugcon", f"file:{debug}",
                "-global", "isa-debugcon.iobase=0x402",
                "-no-reboot", "-boot", "strict=on,reboot-timeout=0"]
        t0 = time.monotonic()
        try:
            proc.run(argv, timeout=budget_s)
        except CommandError as exc:
            if exc.timed_out:
                return False, f"a KVM guest did not get through its firmware in {budget_s:.0f}s"
            return False, f"KVM guest failed: {exc}"
        took = time.monotonic() - t0
        text = debug.read_text(errors="replace") if debug.exists() else ""
        if "No bootable device" not in text and "Booting from" not in text:
            return False, "KVM guest firmware stopped early"
        return True, f"KVM guest firmware ran in {took:.2f}s"


def resolve_virt_type(configured: str, state: StateDir) -> str:
    """The virt type to use: ``configured`` unless it is ``auto``, then a (cached) probe."""
    if configured in ("kvm", "qemu"):
        return configured
    cached = read_json(state.virt_type_json)
    if cached and cached.get("boot_id") == _boot_id() and cached.get("virt_type") in ("kvm", "qemu"):
        log.info("virt type %s (cached: %s)", cached["virt_type"], cached.get("reason", ""))
        return cached["virt_type"]
    ok, reason = probe_kvm()
    virt = "kvm" if ok else "qemu"
    log.info("virt type %s: %s", virt, reason)
    write_json_atomic(state.virt_type_json, {"virt_type": virt, "reason": reason,
                                             "boot_id": _boot_id()})
    return virt
