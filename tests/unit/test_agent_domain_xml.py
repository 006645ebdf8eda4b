"""Domain XML: every rendered variant validates with virt-xml-validate; the mark round-trips."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.domain_xml import (DomainPaths, domain_uuid, mark_of_domain_xml, parse_mark,
                              render_domain_xml)
from agent.spec import METADATA_NS
from agent.testing import make_instance, make_network, make_nic

needs_validator = pytest.mark.skipif(
    shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None,
    reason="virt-xml-validate (libvirt-clients) and xmllint (libxml2-utils) are required")


def paths_for(inst) -> DomainPaths:
    root = Path("/var/lib/miniecs-agent/instances") / inst.id
    return DomainPaths({d.id: root / f"{d.id}.qcow2" for d in inst.disks},
                       root / "seed.iso", root / "console.log")


def render(inst, virt="qemu", cache="none", gen=1) -> str:
    return render_domain_xml(inst, paths_for(inst), virt, disk_cache=cache, generation=gen)


net2 = make_network("vpc-zzzzzzzzzzzzzzzzzzzz", mtu=1500)
VARIANTS = {
    "qemu-none": (make_instance(), "qemu", "none"),
    "kvm-writeback": (make_instance(vcpus=2, memory_mib=2048), "kvm", "writeback"),
    "data-disks": (make_instance(data_disks=2), "qemu", "none"),
    "two-nics": (make_instance(nics=[make_nic(), make_nic("eni-yyyyyyyyyyyyyyyyyyyy", "52:54:00:aa:bb:cc",
                                                         "10.9.0.5", net2)]), "qemu", "none"),
    "no-nic": (make_instance(nics=[]), "qemu", "writeback"),
    "hostile-name": (make_instance(name='a<b>&"c\' ]]>'), "kvm", "none"),
}


@needs_validator
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_xml_validates(variant, tmp_path):
    inst, virt, cache = VARIANTS[variant]
    f = tmp_path / "domain.xml"
    f.write_text(render(inst, virt, cache))
    res = subprocess.run(["virt-xml-validate", str(f), "domain"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_validator_rejects_broken_xml(tmp_path):
    """Guard: the validation above would notice an invalid document."""
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("validator missing")
    f = tmp_path / "bad.xml"
    f.write_text(render(make_instance()).replace("<vcpu", "<vcpus"))
    res = subprocess.run(["virt-xml-validate", str(f), "domain"], capture_output=True, timeout=60)
    assert res.returncode != 0


def test_domain_essentials():
    inst = make_instance(data_disks=1)
    root = ET.fromstring(render(inst, "kvm", "none", gen=7))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == inst.id
    assert root.findtext("uuid") == domain_uuid(inst.id)
    assert root.find("os/type").get("machine") == "pc"
    assert root.find("os/boot").get("dev") == "hd"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("memory") == "256" and root.find("memory").get("unit") == "MiB"
    disks = root.findall("devices/disk[@device='disk']")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]
    assert all(d.find("target").get("bus") == "virtio" for d in disks)
    assert {d.find("driver").get("cache") for d in disks} == {"none"}
    assert {d.find("driver").get("type") for d in disks} == {"qcow2"}
    cd = root.find("devices/disk[@device='cdrom']")
    assert cd.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    assert cd.find("readonly") is not None
    assert cd.find("source").get("file").endswith("/seed.iso")
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"
    assert nic.find("source").get("bridge") == inst.nics[0].bridge
    assert nic.find("target").get("dev") == inst.nics[0].tap
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("mtu").get("size") == "1450"
    assert root.find("devices/serial").get("type") == "file"
    assert root.find("devices/console/target").get("type") == "serial"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert ET.fromstring(render(inst, "qemu")).find("cpu") is None


def test_mark_roundtrip_and_hash_ignores_generation():
    inst = make_instance()
    a, b = render(inst, gen=1), render(inst, gen=99)
    ma, mb = mark_of_domain_xml(a), mark_of_domain_xml(b)
    assert ma.instance_id == inst.id and ma.generation == 1 and mb.generation == 99
    assert ma.config_hash == mb.config_hash and len(ma.config_hash) == 64
    bigger = inst.model_copy(update={"memory_mib": 512})
    assert mark_of_domain_xml(render(bigger)).config_hash != ma.config_hash
    assert mark_of_domain_xml(render(inst, cache="writeback")).config_hash != ma.config_hash


def test_parse_mark_accepts_libvirt_form_and_rejects_others():
    # libvirt hands back the element without its namespace
    plain = ("<instance>\n <id>i-abc</id>\n <generation>3</generation>\n"
             " <config-hash>ff</config-hash>\n</instance>")
    m = parse_mark(plain)
    assert (m.instance_id, m.generation, m.config_hash) == ("i-abc", 3, "ff")
    assert parse_mark(f'<instance xmlns="{METADATA_NS}"><id>i-x</id></instance>').instance_id == "i-x"
    assert parse_mark("<other><id>i-x</id></other>") is None
    assert parse_mark("<instance><name>x</name></instance>") is None
    assert parse_mark("not xml <") is None
    assert mark_of_domain_xml("<domain type='kvm'><name>foreign</name></domain>") is None


def test_user_values_are_escaped_not_injected():
    inst = make_instance(name="x</miniecs:name><evil/>")
    root = ET.fromstring(render(inst))
    assert root.find(".//evil") is None
    assert root.find(f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}name").text == inst.name
