"""A page of instances costs a fixed number of SQL statements, not one per instance.

Each instance's shown status depends on its host (Unknown while the host is Down), and
reading the host per instance was half of a page's time at 100 instances: the page's
hosts are read once and looked up in memory.
"""

from __future__ import annotations

from tests.controller_factories import region  # noqa: F401 - fixture
from tests.controller_factories import sql_statements


def _statements(db, fn, tries: int = 3) -> int:
    """SELECTs ``fn`` sends: the fewest of ``tries`` runs (the app's background readers,
    e.g. the generation poller every 0.2 s in tests, may add one to a run, never remove)."""
    counts = []
    for _ in range(tries):
        with sql_statements(db) as seen:
            fn()
        counts.append(len([s for s in seen if s.upper().startswith("SELECT")]))
    return min(counts)


def test_a_page_of_instances_reads_their_hosts_once(region):
    region.register_host("hv-a", vcpus=8)
    region.register_host("hv-b", vcpus=8, underlay="192.0.2.12")
    net = region.network()
    image = region.image()
    region.ok("POST", "/instances/batch", {**region.instance_body(net, image, name="w-[1,3]"),
                                           "amount": 4})
    region.items("/instances")  # warm: the caller's key and anything else read once
    small = _statements(region.db, lambda: region.items("/instances"))
    region.ok("POST", "/instances/batch", {**region.instance_body(net, image, name="v-[1,3]"),
                                           "amount": 12})
    listed = []

    def list_all() -> None:
        listed[:] = region.items("/instances")

    big = _statements(region.db, list_all)
    assert len(listed) == 16 and {i["status"] for i in listed} == {"Pending"}
    assert len({i["host_id"] for i in listed}) == 2
    # four times the instances, the same statements (selectin loads, the hosts once)
    assert big == small, (small, big)
