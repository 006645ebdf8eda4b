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
