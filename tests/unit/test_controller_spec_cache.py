"""Compiled specs are served from the cache while the host's generation stays, and a change
that forgets its generation bump is caught (check mode, on in the whole suite)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from controller.api import agent as agent_routes
from controller.models import Instance
from controller.services.spec_cache import SpecCache, StaleSpec
from tests.controller_factories import database_url, region, region_any_db  # noqa: F401 - fixtures


@pytest.fixture
def compiles(monkeypatch) -> list[str]:
    """Host ids of every spec compile the long-poll route runs."""
    calls: list[str] = []
    real = agent_routes.host_spec_body

    def counting(session, host_id, settings=None, fragments=None, head=None, net_gens=None):
        calls.append(host_id)
        return real(session, host_id, settings, fragments, head=head, net_gens=net_gens)

    monkeypatch.setattr(agent_routes, "host_spec_body", counting)
    return calls


def test_same_generation_is_answered_without_compiling_again(region, compiles):
    region.client.app.state.spec_cache.check = False
    agent = region.register_host()
    net = region.network()
    image = region.image()
    region.create_instance(net, image)
    first = agent.spec()
    assert len(compiles) == 1
    # a timed-out long-poll and a fresh poll of the same generation: no compile
    assert agent.spec(after=first["generation"], wait=0.3) == first
    assert agent.spec() == first
    assert len(compiles) == 1
    # a change bumps the generation: compiled again, with the change in it
    region.create_instance(net, image, name="web-2")
    second = agent.spec()
    assert second["generation"] > first["generation"]
    assert len(second["instances"]) == 2
    assert len(compiles) == 2


def test_a_change_without_a_bump_fails_the_long_poll_in_check_mode(region, compiles):
    assert region.client.app.state.spec_cache.check, "the suite runs with the check on"
    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.spec()
    assert agent.spec()["instances"][0]["name"] == "web-1"  # a checked hit: same content
    with region.db.write() as session:  # a write that forgets notify.bump_generation
        session.execute(update(Instance).where(Instance.id == inst["id"]).values(name="other"))
    with pytest.raises(StaleSpec, match=agent.host_id):  # the TestClient re-raises the 500's
        region.client.get("/api/v1/agent/spec", headers=agent.headers)
    # the bad entry is dropped: the next answer is the fresh compile
    assert agent.spec()["instances"][0]["name"] == "other"


def test_entries_expire_and_keep_the_newest_generation(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("controller.services.spec_cache.time.monotonic", lambda: now[0])
    cache = SpecCache(max_age_s=300, max_hosts=2)
    cache.put("h1", 5, b"five")
    assert cache.get("h1", 5) == b"five"
    assert cache.get("h1", 4) is None
    cache.put("h1", 4, b"four")  # a slower reader of an older generation
    assert cache.get("h1", 5) == b"five"
    now[0] += 301
    assert cache.get("h1", 5) is None  # a missed bump reaches the agent within max_age_s
    cache.put("h1", 5, b"five")
    cache.put("h2", 1, b"x")
    cache.put("h3", 1, b"y")
    assert cache.get("h1", 5) is None  # least recently used host left first
    assert cache.get("h3", 1) == b"y"


def test_check_mode_compares_only_a_settled_generation():
    cache = SpecCache(check=True)
    cache.put("h1", 7, b"old")
    # the generation moved during the compile (PostgreSQL sees each statement's commits)
    assert cache.answer("h1", 7, lambda _f: (7, b"new", False)) == b"new"
    cache.put("h1", 7, b"old")
    with pytest.raises(StaleSpec):
        cache.answer("h1", 7, lambda _f: (7, b"new", True))


def test_a_peers_create_recompiles_only_that_vpcs_part(region, monkeypatch):
    """h1 has instances in two VPCs; a create on h2 in one of them bumps h1 through the VPC
    (its FDB gains the port): h1's own part and its other VPC's part are reused."""
    from controller.services import specs

    region.client.app.state.spec_cache.check = False
    h1 = region.register_host("hv-01")
    net_a = region.network()
    net_b = region.network(vpc_cidr="10.1.0.0/16", vsw_cidr="10.1.1.0/24")
    image = region.image()
    a1 = region.create_instance(net_a, image, name="a1")
    region.create_instance(net_b, image, name="b1")
    first = h1.spec()
    assert len(first["networks"]) == 2
    h2 = region.register_host("hv-02")
    with region.db.write() as session:  # only h2 takes new instances
        from controller.models import Host
        session.get(Host, h1.host_id).maintenance = True
    local_calls, vpc_calls = [], []
    real_local, real_vpc = specs._local_part, specs._vpc_parts

    def local_part(session, host, settings, *rest):
        local_calls.append(host.id)
        return real_local(session, host, settings, *rest)

    def vpc_parts(session, host, settings, vpc_ids, *rest):
        vpc_calls.append((host.id, list(vpc_ids)))
        return real_vpc(session, host, settings, vpc_ids, *rest)

    serialised: list[str] = []  # instances built with their groups (and serialised)
    real_groups = specs._with_groups

    def with_groups(inst, nic_parts):
        serialised.append(inst.name)
        return real_groups(inst, nic_parts)

    monkeypatch.setattr(specs, "_local_part", local_part)
    monkeypatch.setattr(specs, "_vpc_parts", vpc_parts)
    monkeypatch.setattr(specs, "_with_groups", with_groups)
    peer = region.create_instance(net_a, image, name="a2")
    assert peer["host_id"] == h2.host_id
    second = h1.spec(after=first["generation"], wait=5)
    assert second["generation"] > first["generation"]
    assert local_calls == []
    assert vpc_calls == [(h1.host_id, [net_a["vpc"]["id"]])]
    # the answer is assembled from JSON kept with the parts: only a1, whose NIC is in the
    # changed VPC, is built and serialised again (b1's JSON and net_b's network are kept)
    assert serialised == [a1["name"]]
    ports = {p["ip"] for n in second["networks"] if n["vpc_id"] == net_a["vpc"]["id"]
             for p in n["ports"]}
    assert peer["private_ip_address"] in ports
    # the same spec as a fresh compile of everything
    with region.db.read() as session:
        fresh = specs.compile_host_spec(session, h1.host_id, region.settings)
    assert second == fresh.model_dump(mode="json")


def test_a_create_on_the_host_keeps_its_other_vpcs_parts_and_instances(region, monkeypatch):
    """A create on h1 in a third VPC recompiles h1's own part, but h1's parts of its two
    other VPCs and the instances in them are kept, not cut and serialised again; an
    instance renamed on h1 is the only one built again."""
    from controller.services import specs

    region.client.app.state.spec_cache.check = False
    h1 = region.register_host("hv-01")
    nets = [region.network(vpc_cidr=f"10.{n}.0.0/16", vsw_cidr=f"10.{n}.1.0/24")
            for n in range(3)]
    image = region.image()
    a1 = region.create_instance(nets[0], image, name="a1")
    region.create_instance(nets[1], image, name="b1")
    first = h1.spec()
    vpc_calls, serialised = [], []
    real_vpc, real_groups = specs._vpc_parts, specs._with_groups

    def vpc_parts(session, host, settings, vpc_ids, *rest):
        vpc_calls.append(list(vpc_ids))
        return real_vpc(session, host, settings, vpc_ids, *rest)

    def with_groups(inst, nic_parts):
        serialised.append(inst.name)
        return real_groups(inst, nic_parts)

    monkeypatch.setattr(specs, "_vpc_parts", vpc_parts)
    monkeypatch.setattr(specs, "_with_groups", with_groups)
    region.create_instance(nets[2], image, name="c1")
    second = h1.spec(after=first["generation"], wait=5)
    assert sorted(i["name"] for i in second["instances"]) == ["a1", "b1", "c1"]
    assert vpc_calls == [[nets[2]["vpc"]["id"]]]
    assert serialised == ["c1"]
    with region.db.read() as session:
        fresh = specs.compile_host_spec(session, h1.host_id, region.settings)
    assert second == fresh.model_dump(mode="json")

    vpc_calls.clear()
    serialised.clear()
    region.ok("PATCH", f"/instances/{a1['id']}", {"name": "a1-renamed"})
    third = h1.spec(after=second["generation"], wait=5)
    assert vpc_calls == [] and serialised == ["a1-renamed"]
    with region.db.read() as session:
        fresh = specs.compile_host_spec(session, h1.host_id, region.settings)
    assert third == fresh.model_dump(mode="json")


def test_a_peers_change_is_answered_with_one_read_of_the_host(region_any_db):
    """The host's head is read once per answer; the assembly is not followed by a re-read of
    its generation (on PostgreSQL it was: a third statement per peer per create, whose
    answer only check mode's comparison with a fresh compile uses)."""
    from tests.controller_factories import sql_statements

    region = region_any_db
    region.client.app.state.spec_cache.check = False
    h1, h2 = region.register_host("hv-01"), region.register_host("hv-02")
    net, image = region.network(), region.image()
    region.create_instance(net, image, name="a1")
    region.create_instance(net, image, name="a2")
    specs = {h.host_id: h.spec() for h in (h1, h2)}
    made = region.create_instance(net, image, name="a3")
    peer = h1 if made["host_id"] == h2.host_id else h2
    with sql_statements(region.db) as seen:
        answer = peer.spec(after=specs[peer.host_id]["generation"], wait=5)
    assert made["private_ip_address"] in {p["ip"] for n in answer["networks"]
                                          for p in n["ports"]}
    # (the generation poller's read of every host's generation may land in the window:
    # it is told apart by the columns it reads)
    heads = [s for s in seen if s.startswith("SELECT hosts.id, hosts.generation, "
                                             "hosts.local_generation")]
    rereads = [s for s in seen if s.split("FROM")[0].split() == ["SELECT", "hosts.generation"]]
    assert len(heads) == 1 and rereads == [], seen


def test_a_vpcs_hosts_cut_their_parts_from_one_compile_of_the_vpc(region, monkeypatch):
    """A change to a VPC compiles the VPC's shared part (ports, groups, firewalls, member
    sets) once; every other host of the VPC cuts its part from it, and each host's spec is
    what a fresh compile gives (its own ports without a VTEP, the others' with theirs)."""
    from controller.services import specs

    region.client.app.state.spec_cache.check = False
    underlays = [f"192.0.2.{10 + n}" for n in range(3)]
    agents = [region.register_host(f"hv-{n:02d}", underlay=u) for n, u in enumerate(underlays)]
    net = region.network()
    image = region.image()
    for n in range(3):  # spread: one per host
        region.create_instance(net, image, name=f"a{n}")
    firsts = [a.spec() for a in agents]
    shared_calls = []
    real = specs._vpc_shared

    def vpc_shared(session, vpc_ids, *rest):
        shared_calls.append(list(vpc_ids))
        return real(session, vpc_ids, *rest)

    monkeypatch.setattr(specs, "_vpc_shared", vpc_shared)
    region.ok("POST", f"/security-groups/{net['sg']['id']}/rules",
              {"direction": "ingress", "protocol": "tcp", "port_range": "22/22",
               "peer_cidr": "0.0.0.0/0"})
    seconds = [a.spec(after=f["generation"], wait=5) for a, f in zip(agents, firsts)]
    assert shared_calls == [[net["vpc"]["id"]]]
    by_host = {a.host_id: u for a, u in zip(agents, underlays)}
    for agent, second in zip(agents, seconds):
        assert second["generation"] > firsts[agents.index(agent)]["generation"]
        (network,) = second["networks"]
        assert sorted(network["overlay"]["remote_vteps"]) == sorted(
            u for h, u in by_host.items() if h != agent.host_id)
        assert sum(p["vtep"] is None for p in network["ports"]) == 1
        assert any(r["port_min"] == 22 for i in second["instances"] for nic in i["nics"]
                   for r in nic["firewall"]["ingress"])
        with region.db.read() as session:
            fresh = specs.compile_host_spec(session, agent.host_id, region.settings)
        assert second == fresh.model_dump(mode="json")


def test_a_host_local_change_announced_only_to_the_vpc_is_caught(region):
    """``bump_network`` is for the VPC's part only: a change of the host's own part (here an
    instance's name) announced that way is found by the check (a fresh compile differs)."""
    from controller.services.specs import bump_hosts_of_vpc

    agent = region.register_host()
    net = region.network()
    inst = region.create_instance(net, region.image())
    agent.spec()
    with region.db.write() as session:
        session.execute(update(Instance).where(Instance.id == inst["id"]).values(name="other"))
        bump_hosts_of_vpc(session, net["vpc"]["id"])
    with pytest.raises(StaleSpec, match="assembled from fragments"):
        region.client.get("/api/v1/agent/spec", headers=agent.headers)


def test_a_host_enrolling_from_a_new_address_moves_its_vtep_in_its_peers_specs(region):
    """Re-enrolment from another underlay address bumps the host and every host sharing a VPC
    with it: their VXLAN peers and its ports' VTEP follow (check mode compares the cache)."""
    a = region.register_host("hv-01", underlay="192.0.2.11")
    b = region.register_host("hv-02", underlay="192.0.2.12")
    net = region.network()
    image = region.image()
    region.create_instance(net, image, name="a")
    region.create_instance(net, image, name="b")
    before = a.spec()
    assert before["networks"][0]["overlay"]["remote_vteps"] == ["192.0.2.12"]
    b.spec()
    region.register_host("hv-02", underlay="192.0.2.99", heartbeat=False)
    after = a.spec(after=before["generation"], wait=5)
    assert after["generation"] > before["generation"]
    assert after["networks"][0]["overlay"]["remote_vteps"] == ["192.0.2.99"]
    assert {p["vtep"] for p in after["networks"][0]["ports"]} == {None, "192.0.2.99"}


def test_hosts_woken_together_compile_a_vpcs_shared_part_once():
    """Long-polls of one VPC's hosts run in parallel threads: one compiles the VPC's shared
    part for that net generation, the others wait for it instead of compiling it again."""
    import threading
    import time

    from controller.services.spec_cache import Fragments

    fragments = Fragments()
    calls: list[list[str]] = []
    started = threading.Event()

    def compile_(vpc_ids):
        calls.append(list(vpc_ids))
        started.set()
        time.sleep(0.2)  # long enough for the other threads to find it in flight
        return {v: f"part of {v}" for v in vpc_ids}

    results = []

    def host():
        results.append(fragments.shared_many({"vpc-a": 3}, compile_))

    first = threading.Thread(target=host)
    first.start()
    started.wait(5)
    others = [threading.Thread(target=host) for _ in range(5)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    assert calls == [["vpc-a"]]
    assert results == [{"vpc-a": "part of vpc-a"}] * 6
    # a newer net generation is compiled again; a failed compile leaves nothing in flight
    fragments.shared_many({"vpc-a": 4}, compile_)
    assert calls == [["vpc-a"], ["vpc-a"]]

    def failing(_ids):
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError):
        fragments.shared_many({"vpc-b": 1}, failing)
    assert fragments.shared_many({"vpc-b": 1}, compile_) == {"vpc-b": "part of vpc-b"}
