"""What a full report writes (reports.py ``_apply_instances``).

A host's full report carries every instance on it; the report that brings one new
instance to Running rewrote all of them (each row's ``observed_at``, one UPDATE row per
instance) after loading each with its disks and NICs. Now the instances' ``observed_at``
is one UPDATE for them all, and only an instance whose observation changed is written.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import event

from tests.controller_factories import region  # noqa: F401 - fixture


def _instance_row_writes(db, fn) -> tuple[int, list[str]]:
    """``UPDATE instances`` executions ``fn`` causes (each parameter set of an executemany
    counted: one row written by the ORM), and the statements."""
    rows, statements = [], []

    def record(_conn, _cursor, statement, parameters, _context, executemany) -> None:
        if statement.strip().upper().startswith("UPDATE INSTANCES"):
            statements.append(statement)
            rows.append(len(parameters) if executemany else 1)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return sum(rows), statements


def _observed(region) -> dict[str, str]:
    """Each instance's ``observed_at`` in the drift view."""
    return {i["resource_id"]: datetime.fromisoformat(i["observed_at"])
            for i in region.items("/status", resource_type="instance", all="true")}


def test_a_report_writes_only_the_instance_whose_observation_changed(region):  # noqa: F811
    agent = region.register_host(vcpus=8)
    net, image = region.network(), region.image()
    made = region.ok("POST", "/instances/batch", {
        **region.instance_body(net, image, name="w-[1,1]"), "amount": 5})["items"]
    agent.converge()
    assert {region.ok("GET", f"/instances/{i['id']}")["status"] for i in made} == {"Running"}
    before = _observed(region)

    one = made[0]["id"]
    powers = {i["id"]: "running" for i in made} | {one: "stopped"}
    rows, statements = _instance_row_writes(region.db, lambda: agent.report(powers))
    # all five observed in one UPDATE, and the stopped one's status: the others' columns
    # are unchanged (each of the five was one row written)
    assert rows == 2, statements
    # desired running, observed stopped: the agent is to start it again
    assert region.ok("GET", f"/instances/{one}")["status"] == "Starting"
    assert {region.ok("GET", f"/instances/{i['id']}")["status"] for i in made[1:]} == \
        {"Running"}
    # every instance in the report was observed again
    after = _observed(region)
    assert len(after) == 5 and all(after[i] > before[i] for i in before)
