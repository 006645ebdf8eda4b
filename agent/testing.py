"""Factories of spec objects for tests and local experiments (one place for all of them)."""

from __future__ import annotations

from agent.spec import (DiskSpec, GatewaySpec, HostSpec, ImageSpec, InstanceSpec, NetworkSpec,
                        NicSpec, OperationSpec)

GIB = 1024 ** 3
IMAGE_SHA = "0" * 64


def make_image(image_id: str = "m-tiny00000000000000", sha256: str = IMAGE_SHA,
               fmt: str = "qcow2", size: int = 1 << 20, virtual_size: int = 1 * GIB) -> ImageSpec:
    return ImageSpec(id=image_id, sha256=sha256, format=fmt, size_bytes=size,
                     virtual_size_bytes=virtual_size, url=f"/api/v1/agent/images/{image_id}/data")


def make_network(vpc: str = "vpc-aaaaaaaaaaaaaaaaaaaa", mtu: int = 1450,
                 gateways: tuple[tuple[str, str], ...] = (("10.0.1.0/24", "10.0.1.1"),)
                 ) -> NetworkSpec:
    sfx = vpc.split("-", 1)[1]
    return NetworkSpec(
        vpc_id=vpc, vni=1000, bridge=f"mbr-{sfx[:10]}", router_ns=f"mrt-{sfx}",
        veth_bridge_side=f"mgw{sfx[:10]}b", veth_router_side=f"mgw{sfx[:10]}r",
        router_mac="02:00:00:aa:bb:cc", mtu=mtu,
        gateways=[GatewaySpec(vswitch_id=f"vsw-{i}", cidr=c, gateway_ip=g)
                  for i, (c, g) in enumerate(gateways)])


def make_nic(nic: str = "eni-bbbbbbbbbbbbbbbbbbbb", mac: str = "52:54:00:12:34:56",
             ip: str = "10.0.1.23", network: NetworkSpec | None = None) -> NicSpec:
    net = network or make_network()
    return NicSpec(id=nic, mac=mac, ip=ip, prefix_len=24, gateway=net.gateways[0].gateway_ip,
                   vpc_id=net.vpc_id, vswitch_id=net.gateways[0].vswitch_id, bridge=net.bridge,
                   tap=f"mtap{nic.split('-', 1)[1][:11]}", mtu=net.mtu)


def make_instance(iid: str = "i-cccccccccccccccccccc", *, power: str = "running",
                  image: ImageSpec | None = None, nics: list[NicSpec] | None = None,
                  user_data: str | None = None, keys: list[str] | None = None,
                  operations: list[OperationSpec] | None = None, data_disks: int = 0,
                  **kw) -> InstanceSpec:
    image = image or make_image()
    sfx = iid.split("-", 1)[1]
    disks = [DiskSpec(id=f"d-{sfx[:18]}s0", role="system", size_bytes=2 * GIB,
                      image_id=image.id, device="vda")]
    disks += [DiskSpec(id=f"d-{sfx[:18]}d{n}", role="data", size_bytes=GIB,
                       device=f"vd{chr(ord('b') + n)}") for n in range(data_disks)]
    return InstanceSpec(
        id=iid, name=kw.pop("name", "web-1"), hostname=kw.pop("hostname", "web-1"),
        vcpus=kw.pop("vcpus", 1), memory_mib=kw.pop("memory_mib", 256), power=power,
        disks=disks, nics=[make_nic()] if nics is None else nics, user_data=user_data,
        ssh_authorized_keys=keys if keys is not None else ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB kp-demo"],
        operations=operations or [], **kw)


def make_host_spec(generation: int = 1, instances: list[InstanceSpec] | None = None,
                   networks: list[NetworkSpec] | None = None,
                   images: list[ImageSpec] | None = None) -> HostSpec:
    return HostSpec(host_id="h-test", generation=generation,
                    instances=[make_instance()] if instances is None else instances,
                    networks=[make_network()] if networks is None else networks,
                    images=[make_image()] if images is None else images)


# ---- a fake libvirt connection, for unit tests of the reconcile pass ---------------

class FakeDomain:
    """Just enough of ``libvirt.virDomain`` for the compute reconciler."""

    def __init__(self, conn: "FakeLibvirt", xml: str) -> None:
        import xml.etree.ElementTree as ET
        self.conn = conn
        root = ET.fromstring(xml)
        self._name = root.findtext("name")
        self.xml = xml
        self.active = False
        self.dom_id = -1
        self.shutoff_reason = 0  # VIR_DOMAIN_SHUTOFF_UNKNOWN
        self.calls: list[str] = []

    def name(self) -> str:
        return self._name

    def metadata(self, _type, ns, _flags=0) -> str:
        import libvirt
        import xml.etree.ElementTree as ET
        el = ET.fromstring(self.xml).find(f"metadata/{{{ns}}}instance")
        if el is None:
            raise _libvirt_error(libvirt.VIR_ERR_NO_DOMAIN_METADATA, "no metadata")
        return ET.tostring(el, encoding="unicode")

    def state(self):
        import libvirt
        if self.active:
            return [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]
        return [libvirt.VIR_DOMAIN_SHUTOFF, self.shutoff_reason]

    def guest_poweroff(self) -> None:
        """The guest OS powers itself off (``poweroff`` inside it)."""
        import libvirt
        self.active, self.dom_id = False, -1
        self.shutoff_reason = libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN

    def isActive(self) -> int:
        return int(self.active)

    def XMLDesc(self, _flags=0) -> str:
        return self.xml

    def isPersistent(self) -> int:
        return 1

    def UUIDString(self) -> str:
        return "00000000-0000-0000-0000-000000000000"

    def ID(self) -> int:
        return self.dom_id

    def create(self) -> None:
        self.conn.fail_if("create", self._name)
        self.calls.append("create")
        self.active = True
        self.conn.next_id += 1
        self.dom_id = self.conn.next_id

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def destroy(self) -> None:
        import libvirt
        self.calls.append("destroy")
        self.active = False
        self.dom_id = -1
        self.shutoff_reason = libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED

    def reboot(self, _flags=0) -> None:
        self.calls.append("reboot")

    def reset(self, _flags=0) -> None:
        self.calls.append("reset")

    def resume(self) -> None:
        self.calls.append("resume")

    def undefineFlags(self, _flags=0) -> None:
        self.calls.append("undefine")
        del self.conn.domains[self._name]


def _libvirt_error(code: int, message: str):
    import libvirt
    err = libvirt.libvirtError(message)
    err.err = (code, 0, message, 0, "", None, None, 0, 0)
    return err


class FakeLibvirt:
    """A fake ``virConnect`` (and the ``LibvirtConnection`` factory in front of it)."""

    def __init__(self) -> None:
        self.domains: dict[str, FakeDomain] = {}
        self.failures: dict[tuple[str, str], str] = {}  # (operation, domain) -> message
        self.next_id = 0

    # factory interface
    def get(self) -> "FakeLibvirt":
        return self

    def invalidate(self) -> None:
        pass

    def fail_if(self, op: str, name: str) -> None:
        import libvirt
        if (op, name) in self.failures:
            raise _libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, self.failures[(op, name)])

    # virConnect interface
    def listAllDomains(self, flags=0) -> list[FakeDomain]:
        import libvirt
        if flags & libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT:
            return []  # every fake domain is persistent
        return list(self.domains.values())

    def getAllDomainStats(self, _stats=0, _flags=0) -> list:
        return [(d, {"state.state": d.state()[0], "state.reason": d.state()[1]})
                for d in self.domains.values()]

    def lookupByName(self, name: str) -> FakeDomain:
        import libvirt
        if name not in self.domains:
            raise _libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, f"no domain {name}")
        return self.domains[name]

    def defineXML(self, xml: str) -> FakeDomain:
        dom = FakeDomain(self, xml)
        self.fail_if("define", dom.name())
        old = self.domains.get(dom.name())
        if old is not None:
            old.xml = xml
            return old
        self.domains[dom.name()] = dom
        return dom
