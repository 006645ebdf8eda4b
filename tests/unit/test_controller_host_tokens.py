"""Host tokens: a host reads its own spec, reports its own objects, downloads its own images.

Decisions (docs/decisions.md, "Host tokens"): the host is taken from the token,
never from a parameter; a report whose ``host_id`` is another host's is refused
(403 ``Forbidden.HostMismatch``) and changes nothing; inside a host's own
report, instances, disks, snapshots and operations that belong to another host
are ignored (logged), so a compromised agent cannot move another host's
resources; images that no instance of the host uses are 404, like a missing
image.
"""

from __future__ import annotations

import time

from tests.controller_factories import region  # noqa: F401 - fixture


def _two_hosts(region):
    a = region.register_host("hv-a", vcpus=1, memory_mib=1024)
    b = region.register_host("hv-b", vcpus=1, memory_mib=1024)
    net = region.network()
    img_a, img_b, unused = region.image(name="ia"), region.image(name="ib", content=b"QFI\xfbB"), \
        region.image(name="iu", content=b"QFI\xfbU")
    # one vCPU per host: the first instance lands on one host, the second on the other
    i1 = region.create_instance(net, img_a, name="one")
    i2 = region.create_instance(net, img_b, name="two")
    by_host = {i1["host_id"]: (i1, img_a), i2["host_id"]: (i2, img_b)}
    assert set(by_host) == {a.host_id, b.host_id}
    ia, image_a = by_host[a.host_id]
    ib, image_b = by_host[b.host_id]
    return a, b, ia, ib, image_a, image_b, unused


def test_spec_is_the_tokens_host_only(region):
    a, b, ia, ib, *_ = _two_hosts(region)
    spec_a = a.spec()
    assert spec_a["host_id"] == a.host_id
    assert [i["id"] for i in spec_a["instances"]] == [ia["id"]]
    # a host parameter cannot pick another host's spec
    r = region.client.get("/api/v1/agent/spec", params={"host_id": b.host_id},
                          headers=a.headers)
    assert r.status_code == 200 and r.json()["host_id"] == a.host_id
    assert ib["id"] not in {i["id"] for i in r.json()["instances"]}


def test_report_for_another_host_is_refused_and_changes_nothing(region):
    a, b, ia, ib, *_ = _two_hosts(region)
    b.spec()
    body = {"host_id": b.host_id, "generation_applied": 99, "generation_seen": 99,
            "instances": [{"id": ib["id"], "power": "running"}], "operations": [], "errors": []}
    r = region.client.post("/api/v1/agent/report", json=body, headers=a.headers)
    assert r.status_code == 403 and r.json()["code"] == "Forbidden.HostMismatch"
    assert region.ok("GET", f"/instances/{ib['id']}")["status"] == "Pending"
    assert region.ok("GET", f"/hosts/{b.host_id}")["generation_applied"] != 99


def test_own_report_naming_another_hosts_objects_is_ignored(region):
    a, b, ia, ib, *_ = _two_hosts(region)
    b.spec()
    b.report({ib["id"]: "running"})
    op = region.ok("POST", f"/instances/{ib['id']}/reboot", {"force": True})
    disk_b = region.ok("GET", "/disks", instance_id=ib["id"])["items"][0]
    a.spec()
    a.report({ia["id"]: "running", ib["id"]: "stopped"},
              operations=[{"id": op["id"], "ok": True, "message": "done by the wrong host"}])
    body = {"host_id": a.host_id, "generation_applied": a.seen, "generation_seen": a.seen,
            "instances": [], "operations": [], "errors": [],
            "disks": [{"id": disk_b["id"], "exists": True, "size_bytes": 1,
                       "attached_to": ia["id"]}]}
    r = region.client.post("/api/v1/agent/report", json=body, headers=a.headers)
    assert r.status_code == 204, r.text
    assert region.ok("GET", f"/instances/{ia['id']}")["status"] == "Running"
    assert region.ok("GET", f"/instances/{ib['id']}")["status"] == "Running"
    assert region.ok("GET", f"/operations/{op['id']}")["outcome"] == "pending"
    after = region.ok("GET", f"/disks/{disk_b['id']}")
    assert after["attached_to"] != ia["id"] and after["observed_size_bytes"] != 1


def test_images_only_those_the_host_needs(region):
    a, b, ia, ib, image_a, image_b, unused = _two_hosts(region)
    get = region.client.get
    assert get(f"/api/v1/agent/images/{image_a}/data", headers=a.headers).status_code == 200
    for image in (image_b, unused, "m-doesnotexist"):
        r = get(f"/api/v1/agent/images/{image}/data", headers=a.headers)
        assert r.status_code == 404 and r.json()["code"] == "InvalidImageId.NotFound", image
    assert get(f"/api/v1/agent/images/{image_b}/data", headers=b.headers).status_code == 200


def test_unknown_admin_and_enrolment_tokens_are_not_host_tokens(region):
    a = region.register_host("hv-a")
    for token in ("mecsh_not-a-token", region.tokens.admin_token, region.tokens.enrolment_token):
        h = {"Authorization": f"Bearer {token}"}
        assert region.client.get("/api/v1/agent/spec", headers=h).status_code == 401
        r = region.client.post("/api/v1/agent/report", headers=h, json={
            "host_id": a.host_id, "generation_applied": 0, "generation_seen": 0,
            "instances": [], "operations": [], "errors": []})
        assert r.status_code == 401
    assert region.client.get("/api/v1/agent/spec").status_code == 401


def test_rekey_revokes_the_old_token_and_shows_the_new_once(region):
    a, b, ia, ib, image_a, *_ = _two_hosts(region)
    old = a.token
    got = region.ok("POST", f"/hosts/{a.host_id}/rekey")
    assert got["host_id"] == a.host_id and got["host_token"] != old
    assert got["host_token"].startswith("mecsh_")
    h_old = {"Authorization": f"Bearer {old}"}
    assert region.client.get("/api/v1/agent/spec", headers=h_old).status_code == 401
    assert region.client.get(f"/api/v1/agent/images/{image_a}/data",
                             headers=h_old).status_code == 401
    r = region.client.post("/api/v1/agent/report", headers=h_old, json={
        "host_id": a.host_id, "generation_applied": 0, "generation_seen": 0,
        "instances": [], "operations": [], "errors": []})
    assert r.status_code == 401
    a.token = got["host_token"]
    assert a.spec()["host_id"] == a.host_id
    # the token is not shown again anywhere
    assert got["host_token"] not in region.call("GET", f"/hosts/{a.host_id}").text
    # only an admin may re-key; the other host's token is untouched
    r = region.client.post(f"/api/v1/hosts/{a.host_id}/rekey", headers=b.headers)
    assert r.status_code == 401
    assert b.spec()["host_id"] == b.host_id
    r = region.call("POST", "/hosts/h-doesnotexist/rekey")
    assert r.status_code == 404 and r.json()["code"] == "InvalidHostId.NotFound"


def test_a_known_token_is_answered_from_memory_and_forgotten_when_tokens_change(
        region, monkeypatch):
    """Agent calls are recognised from ``host_tokens`` after the first: no database read.
    A token change in this process clears it at once; elsewhere (another controller
    process over the same database) it lasts at most the TTL; a lookup that raced with a
    change is not remembered."""
    from controller.api import deps
    from controller.services import host_tokens

    a = region.register_host("hv-a")
    reads = []
    real = deps._host_of_digest
    monkeypatch.setattr(deps, "_host_of_digest", lambda *args: (reads.append(1), real(*args))[1])
    host_tokens.cache_of(region.db).clear()
    a.spec()
    a.spec()
    assert len(reads) == 1
    # as another process would: the token changes in the database, not through this one
    from sqlalchemy import update

    from controller.models import Host

    with region.db.write() as session:
        session.execute(update(Host).where(Host.id == a.host_id).values(token_hash="x" * 64))
    cache = host_tokens.cache_of(region.db)
    # the poller that wakes long-polls reads the digests too and forgets the moved one
    # (the TTL, 60 s, is not what refuses it)
    assert cache.ttl_s >= 30
    deadline = time.monotonic() + 5
    while region.client.get("/api/v1/agent/spec", headers=a.headers,
                            params={"wait": 0}).status_code != 401:
        assert time.monotonic() < deadline, "the other process's revocation was not seen"
        time.sleep(0.1)
    # ``validate`` on its own: a moved digest and a vanished host are dropped, others kept
    cache.clear()
    epoch = cache.epoch()
    cache.put("d1", ("h-1", "hv1"), epoch)
    cache.put("d2", ("h-2", "hv2"), epoch)
    cache.put("d3", ("h-3", "hv3"), epoch)
    cache.validate({"h-1": "d1", "h-2": "other"}, ["h-1", "h-2", "h-3"])
    assert cache.get("d1") == ("h-1", "hv1")
    assert cache.get("d2") is None and cache.get("d3") is None
    # a lookup that started before a change is not kept
    epoch = cache.epoch()
    cache.clear()
    cache.put("digest", ("h-1", "hv"), epoch)
    assert cache.get("digest") is None


def test_a_removed_hosts_token_is_refused_at_once(region):
    a = region.register_host("hv-a")
    assert a.spec()["host_id"] == a.host_id  # known, and remembered
    region.ok("DELETE", f"/hosts/{a.host_id}")
    assert region.client.get("/api/v1/agent/spec", headers=a.headers).status_code == 401
