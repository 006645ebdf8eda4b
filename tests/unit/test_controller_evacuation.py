"""Evacuating a Down host: its instances rebuilt on other hosts with the same identity
and addresses (their disks made again, their snapshots lost), its deleting instances
finalised, the host in maintenance; refused for a live host or without the data-loss
acknowledgement; and a host that comes back afterwards gets none of them back."""

from __future__ import annotations

from controller.models import Host
from tests.controller_factories import database_url, region_any_db  # noqa: F401


def _down(r, host_id: str) -> None:
    """The watchdog's verdict (tested in test_controller_host_lifecycle), set directly."""
    with r.db.write() as session:
        session.get(Host, host_id).state = "down"


def _report_disk(r, agent, disk_id: str, attached_to: str) -> None:
    resp = r.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen,
        "instances": [{"id": i, "power": p} for i, p in agent.observed.items()],
        "disks": [{"id": disk_id, "size_bytes": 1 << 30, "attached_to": attached_to}]})
    assert resp.status_code == 204, resp.text


def _report(r, agent, **fields) -> None:
    resp = r.client.post("/api/v1/agent/report", headers=agent.headers, json={
        "host_id": agent.host_id, "generation_applied": agent.seen,
        "generation_seen": agent.seen, **fields})
    assert resp.status_code == 204, resp.text


def _host(r, host_id: str) -> dict:
    return r.ok("GET", f"/hosts/{host_id}")


def test_evacuation_rebuilds_a_down_hosts_instances_elsewhere(region_any_db):
    r = region_any_db
    dead = r.register_host("hv-dead", underlay="192.0.2.11")
    net, image = r.network(), r.image()
    web = r.create_instance(net, image, name="web")
    cold = r.create_instance(net, image, name="cold")
    gone = r.create_instance(net, image, name="gone")
    data = r.ok("POST", "/disks", {"name": "data", "size_gib": 1, "instance_id": web["id"]})
    dead.converge()
    r.ok("POST", f"/instances/{cold['id']}/stop")
    dead.converge()
    _report_disk(r, dead, data["id"], attached_to=web["id"])
    snap = r.ok("POST", "/snapshots", {"disk_id": data["id"]})
    r.settings.eip_pool = "203.0.113.0/29"
    eip = r.ok("POST", "/eips", {"name": "web"})
    r.ok("POST", f"/eips/{eip['id']}/associate", {"instance_id": web["id"]})
    r.ok("DELETE", f"/instances/{gone['id']}", force="true")  # the host never acknowledges
    # a peer of the VPC elsewhere, kept out of the evacuation's choice by maintenance
    peer = r.register_host("hv-peer", underlay="192.0.2.30")
    peer_vm = r.create_instance(net, image, name="peer")
    assert peer_vm["host_id"] == peer.host_id
    r.ok("POST", f"/hosts/{peer.host_id}/maintenance", on="true")
    left = [r.register_host(f"hv-{n}", underlay=f"192.0.2.{20 + n}") for n in (1, 2)]
    for agent in (peer, *left):
        agent.converge()
    assert {i["host_id"] for i in r.items("/instances") if i["id"] != peer_vm["id"]} == \
        {dead.host_id}

    # Refused, nothing changed: a live host, and no acknowledgement of the data loss.
    live = r.call("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert live.status_code == 409, live.text
    assert live.json()["code"] == "IncorrectHostStatus.NotDown"
    _down(r, dead.host_id)
    unacknowledged = r.call("POST", f"/hosts/{dead.host_id}/evacuate")
    assert unacknowledged.status_code == 400, unacknowledged.text
    assert unacknowledged.json()["code"] == "MissingParameter.AcceptDataLoss"
    assert "accept_data_loss" in unacknowledged.json()["message"]
    assert {i["id"]: i["host_id"] for i in r.items("/instances")} == \
        {web["id"]: dead.host_id, cold["id"]: dead.host_id, gone["id"]: dead.host_id,
         peer_vm["id"]: peer.host_id}
    assert _host(r, dead.host_id)["maintenance"] is False

    out = r.ok("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert sorted(out["evacuated"]) == sorted([web["id"], cold["id"]])
    assert out["deleted"] == [gone["id"]] and out["snapshots_lost"] == [snap["id"]]
    assert out["done"] is True and out["not_moved"] == {} and out["instances_left"] == []
    assert _host(r, dead.host_id)["maintenance"] is True

    # Same identity and addresses on the new host; rebuilt, so Pending until it reports.
    targets = {a.host_id: a for a in left}
    for before in (web, cold):
        now = r.ok("GET", f"/instances/{before['id']}")
        assert now["host_id"] == out["evacuated"][before["id"]] in targets
        assert (now["private_ip_address"], now["mac_address"], now["nics"][0]["id"]) == \
            (before["private_ip_address"], before["mac_address"], before["nics"][0]["id"])
        assert now["status"] == "Pending" and "evacuated from host hv-dead" in \
            now["status_reason"]
    moved_data = r.ok("GET", f"/disks/{data['id']}")
    assert moved_data["host_id"] == out["evacuated"][web["id"]]
    assert moved_data["status"] == "Attaching"  # until the new host has made and attached it
    assert "lost with host hv-dead" in moved_data["status_reason"]
    assert r.call("GET", f"/snapshots/{snap['id']}").status_code == 404
    assert r.ok("GET", f"/instances/{gone['id']}")["status"] == "Deleted"

    # The new hosts' specs carry them as they were (the stopped one stopped, the data
    # disk made again there); every spec's port of web points at web's new host.
    specs = {h: a.spec() for h, a in targets.items()}
    powers = {i["id"]: i["power"] for s in specs.values() for i in s["instances"]}
    assert powers == {web["id"]: "running", cold["id"]: "stopped"}
    specs[peer.host_id] = peer.spec()
    web_host = out["evacuated"][web["id"]]
    assert data["id"] in {d["id"] for d in specs[web_host]["disks"]}
    eips = {h: {e["public_ip"]: e["private_ip"] for n in s["networks"]
                for e in n["uplink"]["eips"]} for h, s in specs.items()}
    assert eips[web_host] == {eip["ip_address"]: web["private_ip_address"]}
    assert all(not found for h, found in eips.items() if h != web_host)
    underlay = {a.host_id: f"192.0.2.{20 + n}" for n, a in zip((1, 2), left)}
    for host_id, s in specs.items():
        ports = {p["mac"]: p for n in s["networks"] for p in n["ports"]}
        if web["mac_address"] in ports or host_id == peer.host_id:
            want = None if host_id == web_host else underlay[web_host]
            assert ports[web["mac_address"]]["vtep"] == want, host_id
    for a in targets.values():
        a.converge()
    assert r.ok("GET", f"/instances/{web['id']}")["status"] == "Running"
    assert r.ok("GET", f"/instances/{cold['id']}")["status"] == "Stopped"

    # Capacity: released on the dead host, taken where they went.
    assert _host(r, dead.host_id)["allocated"] == {"vcpus": 0, "memory_mib": 0, "disk_gib": 0}
    assert sum(_host(r, h)["allocated"]["vcpus"] for h in targets) == \
        web["vcpus"] + cold["vcpus"]

    # The dead host comes back: ready, still in maintenance, with an empty spec; what it
    # still reports of its old guests changes nothing (its agent removes them).
    assert dead.spec()["instances"] == []
    dead.report({web["id"]: "running", cold["id"]: "running"})
    assert _host(r, dead.host_id)["state"] == "maintenance"
    assert r.ok("GET", f"/instances/{cold['id']}")["status"] == "Stopped"
    assert r.ok("GET", f"/instances/{web['id']}")["host_id"] == web_host
    # ...and holds nothing: it can be removed.
    r.ok("DELETE", f"/hosts/{dead.host_id}")


def test_evacuation_lists_what_finds_no_room_and_moves_it_once_there_is(region_any_db):
    r = region_any_db
    dead = r.register_host("hv-dead", vcpus=4, underlay="192.0.2.11")
    net, image = r.network(), r.image()
    insts = [r.create_instance(net, image, name=f"vm-{n}") for n in range(2)]
    small = r.register_host("hv-small", vcpus=1, memory_mib=256, underlay="192.0.2.12")
    _down(r, dead.host_id)
    first = r.ok("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert len(first["evacuated"]) == 1 and len(first["not_moved"]) == 1, first
    stuck = next(iter(first["not_moved"]))
    assert "OperationDenied.NoStock" in first["not_moved"][stuck]
    assert first["instances_left"] == [stuck] and first["done"] is False
    assert r.ok("GET", f"/instances/{stuck}")["host_id"] == dead.host_id
    assert {i["id"] for i in insts} == {stuck, *first["evacuated"]}
    assert first["evacuated"][next(iter(first["evacuated"]))] == small.host_id

    r.register_host("hv-big", vcpus=8, underlay="192.0.2.13")
    second = r.ok("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert list(second["evacuated"]) == [stuck] and second["done"] is True


def test_evacuation_of_an_unknown_host_is_404(region_any_db):
    missing = region_any_db.call("POST", "/hosts/h-doesnotexist000000000/evacuate",
                                 accept_data_loss="true")
    assert missing.status_code == 404 and missing.json()["code"] == "InvalidHostId.NotFound"


def test_evacuation_ends_the_hosts_migrations_first(region_any_db):
    r = region_any_db
    dead = r.register_host("hv-dead", underlay="192.0.2.11")
    net, image = r.network(), r.image()
    leaving = r.create_instance(net, image, name="leaving")
    other = r.register_host("hv-other", underlay="192.0.2.12")
    arriving = r.create_instance(net, image, name="arriving")
    assert (leaving["host_id"], arriving["host_id"]) == (dead.host_id, other.host_id)
    dead.converge()
    other.converge()
    out_of = r.ok("POST", f"/instances/{leaving['id']}/migrate", {"host_id": other.host_id})
    into = r.ok("POST", f"/instances/{arriving['id']}/migrate", {"host_id": dead.host_id})
    _down(r, dead.host_id)

    out = r.ok("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert sorted(out["migrations_failed"]) == sorted([out_of["id"], into["id"]])
    for m in (out_of, into):
        ended = r.ok("GET", f"/migrations/{m['id']}")
        assert ended["state"] == "failed" and "hv-dead was evacuated" in ended["message"]
    # the arriving one stays where it ran; the leaving one is rebuilt there too
    assert r.ok("GET", f"/instances/{arriving['id']}")["host_id"] == other.host_id
    assert out["evacuated"] == {leaving["id"]: other.host_id}
    # the two reservations went with their migrations: each host counts what it holds
    assert _host(r, dead.host_id)["allocated"]["vcpus"] == 0
    assert _host(r, other.host_id)["allocated"]["vcpus"] == \
        leaving["vcpus"] + arriving["vcpus"]


def test_evacuation_remakes_detached_disks_and_fails_what_waited_on_the_store(region_any_db):
    """The rest of the host's store: a detached disk is made again, empty, on the host
    of its zone with the most free disk out of maintenance; the snapshots kept there are
    lost; an image and a disk being made from one of them go to Error at once."""
    r = region_any_db
    dead = r.register_host("hv-dead", disk_gib=100, underlay="192.0.2.11")
    loose = r.ok("POST", "/disks", {"name": "loose", "size_gib": 5, "host_id": dead.host_id})
    kept = r.ok("POST", "/disks", {"name": "kept", "size_gib": 1, "host_id": dead.host_id})
    dead.spec()
    _report(r, dead, disks=[{"id": d["id"], "size_bytes": d["size_gib"] << 30}
                            for d in (loose, kept)])
    snap = r.ok("POST", "/snapshots", {"disk_id": loose["id"]})
    retained = r.ok("POST", "/snapshots", {"disk_id": kept["id"]})
    dead.spec()
    _report(r, dead, snapshots=[{"id": s["id"], "state": "accomplished"}
                                for s in (snap, retained)])
    r.ok("DELETE", f"/disks/{kept['id']}")  # its snapshot stays in the host's store
    roomy = r.register_host("hv-roomy", disk_gib=500, underlay="192.0.2.12")
    r.ok("POST", f"/hosts/{roomy.host_id}/maintenance", on="true")  # not a candidate
    live = r.register_host("hv-live", disk_gib=50, underlay="192.0.2.13")
    image = r.ok("POST", "/images", {"name": "from-snap", "snapshot_id": snap["id"]})
    copy = r.ok("POST", "/disks", {"name": "copy", "snapshot_id": snap["id"],
                                   "host_id": live.host_id})
    exports = {o["id"] for o in dead.spec()["storage_operations"]}
    assert len(exports) == 2
    assert _host(r, dead.host_id)["allocated"]["disk_gib"] == 5
    _down(r, dead.host_id)

    out = r.ok("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert out["disks_remade"] == {loose["id"]: live.host_id}
    assert out["snapshots_lost"] == sorted([snap["id"], retained["id"]])
    assert sorted(out["operations_failed"]) == sorted(exports)
    assert out["disks_left"] == [] and out["not_moved"] == {} and out["done"] is True
    remade = r.ok("GET", f"/disks/{loose['id']}")
    assert (remade["host_id"], remade["status"], remade["name"], remade["size_gib"]) == \
        (live.host_id, "Creating", "loose", 5)
    assert "lost with host hv-dead" in remade["status_reason"]
    assert (_host(r, dead.host_id)["allocated"]["disk_gib"],
            _host(r, live.host_id)["allocated"]["disk_gib"]) == (0, 5 + copy["size_gib"])
    # what waited on the dead host's store gave up, with the reason
    failed_image = r.ok("GET", f"/images/{image['id']}")
    assert failed_image["status"] == "Error" and "hv-dead was evacuated" in \
        failed_image["status_reason"]
    failed_copy = r.ok("GET", f"/disks/{copy['id']}")
    assert failed_copy["status"] == "Error" and "hv-dead was evacuated" in \
        failed_copy["status_reason"]
    for s in (snap, retained):
        assert r.call("GET", f"/snapshots/{s['id']}").status_code == 404
    # the live host makes the empty disk (not from any snapshot), and it is Available
    by_id = {d["id"]: d for d in live.spec()["disks"]}
    assert by_id[loose["id"]]["source_snapshot_id"] is None
    _report(r, live, disks=[{"id": loose["id"], "size_bytes": 5 << 30}])
    assert r.ok("GET", f"/disks/{loose['id']}")["status"] == "Available"
    assert dead.spec()["disks"] == [] and dead.spec()["storage_operations"] == []
    r.ok("DELETE", f"/hosts/{dead.host_id}")  # it holds nothing any more


def test_a_detached_disk_without_room_stays_listed(region_any_db):
    r = region_any_db
    dead = r.register_host("hv-dead", disk_gib=100, underlay="192.0.2.11")
    big = r.ok("POST", "/disks", {"name": "big", "size_gib": 80, "host_id": dead.host_id})
    r.register_host("hv-small", disk_gib=50, underlay="192.0.2.12")
    _down(r, dead.host_id)
    out = r.ok("POST", f"/hosts/{dead.host_id}/evacuate", accept_data_loss="true")
    assert list(out["not_moved"]) == [big["id"]] and "OperationDenied.NoStock" in \
        out["not_moved"][big["id"]]
    assert out["disks_left"] == [big["id"]] and out["done"] is False
    assert r.ok("GET", f"/disks/{big['id']}")["host_id"] == dead.host_id
    refused = r.call("DELETE", f"/hosts/{dead.host_id}")
    assert refused.status_code == 409 and refused.json()["code"] == \
        "DependencyViolation.Host.Disks"
