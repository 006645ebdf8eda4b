"""Render an instance's libvirt domain XML (ElementTree, never string formatting).

The domain carries miniecs's mark: ``<metadata><miniecs:instance>`` in
``METADATA_NS`` with the instance id, the spec generation it was rendered
from and a hash of everything else in the XML (``config-hash``). The compute
reconciler compares that hash to decide whether a domain must be redefined,
so a new generation that does not change this instance never touches it.
"""

from __future__ import annotations

import hashlib
import platform
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.spec import METADATA_NS, METADATA_PREFIX, InstanceSpec

ET.register_namespace(METADATA_PREFIX, METADATA_NS)

DiskCache = Literal["none", "writeback"]
VirtType = Literal["kvm", "qemu"]


@dataclass(frozen=True)
class DomainPaths:
    """Host files a domain refers to (all under the agent's state directory)."""

    disks: dict[str, Path]  # disk id -> qcow2 file
    seed_iso: Path
    console_log: Path


@dataclass(frozen=True)
class DomainMark:
    """What ``<miniecs:instance>`` says about a domain."""

    instance_id: str
    generation: int
    config_hash: str


def domain_uuid(instance_id: str) -> str:
    """A stable UUID per instance, so a redefinition always names the same domain."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{METADATA_NS}#{instance_id}"))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _m(tag: str) -> str:
    return f"{{{METADATA_NS}}}{tag}"


def _devices(dev: ET.Element, instance: InstanceSpec, paths: DomainPaths, cache: DiskCache) -> None:
    io = "native" if cache == "none" else "threads"
    for disk in instance.disks:
        d = _sub(dev, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type="qcow2", cache=cache, io=io, discard="unmap")
        _sub(d, "source", file=str(paths.disks[disk.id]))
        _sub(d, "target", dev=disk.device, bus="virtio")
    cd = _sub(dev, "disk", type="file", device="cdrom")
    _sub(cd, "driver", name="qemu", type="raw")
    _sub(cd, "source", file=str(paths.seed_iso))
    _sub(cd, "target", dev="hdc", bus="ide")
    _sub(cd, "readonly")
    for nic in instance.nics:
        i = _sub(dev, "interface", type="bridge")
        _sub(i, "mac", address=nic.mac.lower())
        _sub(i, "source", bridge=nic.bridge)
        _sub(i, "target", dev=nic.tap)
        _sub(i, "model", type="virtio")
        _sub(i, "mtu", size=str(nic.mtu))
    # Serial console to a file that survives guest reboots (append), also the <console>.
    s = _sub(dev, "serial", type="file")
    _sub(s, "source", path=str(paths.console_log), append="on")
    _sub(s, "target", port="0")
    c = _sub(dev, "console", type="file")
    _sub(c, "source", path=str(paths.console_log), append="on")
    _sub(c, "target", type="serial", port="0")
    # Entropy for the guest's first boot (SSH host keys) without waiting.
    rng = _sub(dev, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    # No balloon: each extra virtio PCI device costs ~0.5 s of boot under TCG, and
    # miniecs does not resize guest memory at run time.
    _sub(dev, "memballoon", model="none")


def _render(instance: InstanceSpec, paths: DomainPaths, virt_type: VirtType,
            disk_cache: DiskCache, mark: ET.Element) -> ET.Element:
    dom = ET.Element("domain", {"type": virt_type})
    _sub(dom, "name", instance.id)
    _sub(dom, "uuid", domain_uuid(instance.id))
    md = _sub(dom, "metadata")
    md.append(mark)
    _sub(dom, "memory", str(instance.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(instance.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(instance.vcpus), placement="static")
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch=platform.machine() or "x86_64", machine="pc")
    _sub(os_, "boot", dev="hd")
    feats = _sub(dom, "features")
    _sub(feats, "acpi")
    _sub(feats, "apic")
    if virt_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough", check="none", migratable="on")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    _devices(_sub(dom, "devices"), instance, paths, disk_cache)
    return dom


def _base_mark(instance: InstanceSpec) -> ET.Element:
    mark = ET.Element(_m("instance"))
    _sub(mark, _m("id"), instance.id)
    _sub(mark, _m("name"), instance.name)
    return mark


def domain_config_hash(instance: InstanceSpec, paths: DomainPaths, virt_type: VirtType,
                       *, disk_cache: DiskCache = "none") -> str:
    """The ``config-hash`` ``render_domain_xml`` puts in the mark, without the full render."""
    base = ET.tostring(_render(instance, paths, virt_type, disk_cache, _base_mark(instance)),
                       encoding="unicode")
    return hashlib.sha256(base.encode()).hexdigest()


def render_domain_xml(instance: InstanceSpec, paths: DomainPaths, virt_type: VirtType,
                      *, disk_cache: DiskCache = "none", generation: int = 0,
                      config_hash: str | None = None) -> str:
    """The domain XML for ``instance``; ``config-hash`` covers everything but the generation
    (pass it when ``domain_config_hash`` already gave it)."""
    if config_hash is None:
        config_hash = domain_config_hash(instance, paths, virt_type, disk_cache=disk_cache)
    mark = _base_mark(instance)
    _sub(mark, _m("generation"), str(generation))
    _sub(mark, _m("config-hash"), config_hash)
    dom = _render(instance, paths, virt_type, disk_cache, mark)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_mark(metadata_xml: str) -> DomainMark | None:
    """Read a ``<miniecs:instance>`` element.

    ``virDomain.metadata`` hands the element back without its namespace (the
    namespace was the lookup key), so children are matched by local name.
    """
    try:
        el = ET.fromstring(metadata_xml)
    except ET.ParseError:
        return None
    if _local(el.tag) != "instance" or el.tag not in ("instance", _m("instance")):
        return None
    fields = {_local(c.tag): (c.text or "").strip() for c in el}
    if not fields.get("id"):
        return None
    try:
        gen = int(fields.get("generation") or 0)
    except ValueError:
        gen = 0
    return DomainMark(fields["id"], gen, fields.get("config-hash", ""))


def mark_of_domain_xml(domain_xml: str) -> DomainMark | None:
    """The miniecs mark inside a full domain XML, or None for someone else's domain."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{_m('instance')}")
    return parse_mark(ET.tostring(el, encoding="unicode")) if el is not None else None
