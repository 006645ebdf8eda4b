"""Tables for the DHCP plan and the tunnel target check (no root, no subprocess)."""

from __future__ import annotations

from pathlib import Path

from agent.dhcp import (DhcpObserved, StartDhcp, StopDhcp, WriteHosts, conf_text, hosts_text,
                        plan_dhcp)
from agent.spec import GatewaySpec, HostSpec, NetworkSpec, PortSpec
from agent.tunnel import TunnelRequest, check_target, ws_url

D = Path("/state/dhcp")
LOCAL = PortSpec(mac="52:54:00:00:00:0A", ip="10.0.1.2")
REMOTE = PortSpec(mac="52:54:00:00:00:02", ip="10.0.1.3", vtep="198.18.0.12")


def net(ports=(LOCAL, REMOTE)) -> NetworkSpec:
    return NetworkSpec(
        vpc_id="vpc-a", vni=5000, bridge="mbr-a", router_ns="mrt-a", veth_bridge_side="mgwab",
        veth_router_side="mgwar", router_mac="02:00:00:00:00:01", mtu=1450,
        gateways=[GatewaySpec(vswitch_id="vsw-1", cidr="10.0.1.0/24", gateway_ip="10.0.1.1"),
                  GatewaySpec(vswitch_id="vsw-2", cidr="10.0.2.0/25", gateway_ip="10.0.2.1")],
        ports=list(ports))


def test_conf_has_static_ranges_routers_mtu_and_no_dns():
    text = conf_text(net(), D / "mrt-a")
    assert "port=0" in text and "interface=mgwar" in text and "bind-interfaces" in text
    assert "dhcp-range=set:vsw_1,10.0.1.0,static,255.255.255.0,12h" in text
    assert "dhcp-range=set:vsw_2,10.0.2.0,static,255.255.255.128,12h" in text
    assert "dhcp-option=tag:vsw_2,option:router,10.0.2.1" in text
    assert "dhcp-option=option:mtu,1450" in text


def test_hosts_only_local_ports_lowercase():
    assert hosts_text(net()) == "52:54:00:00:00:0a,10.0.1.2\n"


def test_plan_start_reload_restart_stop():
    n = net()
    conf, hosts = conf_text(n, D / "mrt-a"), hosts_text(n)
    fresh = plan_dhcp([n], {}, {"mrt-a"}, D)
    assert [type(a) for a in fresh] == [WriteHosts, StartDhcp]
    assert fresh[0].reload is False
    # no router namespace yet: wait
    assert plan_dhcp([n], {}, set(), D) == []
    # converged
    assert plan_dhcp([n], {"mrt-a": DhcpObserved(conf, hosts, 42)}, {"mrt-a"}, D) == []
    # a new port: rewrite and SIGHUP, no restart
    acts = plan_dhcp([n], {"mrt-a": DhcpObserved(conf, "", 42)}, {"mrt-a"}, D)
    assert acts == [WriteHosts("mrt-a", hosts, reload=True)]
    # a new vSwitch changes the configuration: restart the old daemon
    acts = plan_dhcp([n], {"mrt-a": DhcpObserved(conf + "#old", hosts, 42)}, {"mrt-a"}, D)
    assert acts == [StartDhcp(n, stop_pid=42)]
    # died: start again
    assert plan_dhcp([n], {"mrt-a": DhcpObserved(conf, hosts, None)}, {"mrt-a"}, D) == \
        [StartDhcp(n, stop_pid=None)]
    # VPC left the host
    assert plan_dhcp([], {"mrt-a": DhcpObserved(conf, hosts, 42)}, set(), D) == \
        [StopDhcp("mrt-a", 42)]


def test_tunnel_targets_only_local_ports_of_served_vpcs():
    spec = HostSpec(host_id="h-1", generation=3, networks=[net()])
    ok = TunnelRequest(id="tun-1", instance_id="i-1", router_ns="mrt-a", ip="10.0.1.2", port=22)
    assert check_target(spec, ok) is None
    assert check_target(None, ok)
    assert "not a port" in check_target(spec, ok.model_copy(update={"ip": "10.0.1.3"}))
    assert "no VPC" in check_target(spec, ok.model_copy(update={"router_ns": "mrt-b"}))
    assert "not a router" in check_target(spec, ok.model_copy(update={"router_ns": "../x"}))
    assert "bad port" in check_target(spec, ok.model_copy(update={"port": 0}))


def test_ws_url():
    assert ws_url("http://127.0.0.1:8080/", "/api/v1/x") == "ws://127.0.0.1:8080/api/v1/x"
    assert ws_url("https://c.example:443", "/a") == "wss://c.example:443/a"


def test_taps_that_lost_their_bridge_are_plugged_again():
    from agent.network import ConfigureLink, LinkObserved, plan_taps
    from agent.spec import NicSpec

    nic = NicSpec(id="eni-1", mac="52:54:00:00:00:0a", ip="10.0.1.2", prefix_len=24,
                  gateway="10.0.1.1", vpc_id="vpc-a", vswitch_id="vsw-1", bridge="mbr-a",
                  tap="mtap1", mtu=1450)
    br = LinkObserved("mbr-a", "bridge", None, 1450, True)
    plugged = LinkObserved("mtap1", "tun", "mbr-a", 1450, True)
    assert plan_taps([nic], {"mbr-a": br, "mtap1": plugged}) == []
    loose = LinkObserved("mtap1", "tun", None, 1450, True)
    assert plan_taps([nic], {"mbr-a": br, "mtap1": loose}) == \
        [ConfigureLink("mtap1", 1450, master="mbr-a")]
    assert plan_taps([nic], {"mtap1": loose}) == []  # bridge not made yet
    assert plan_taps([nic], {"mbr-a": br}) == []  # domain not running: libvirt's job
