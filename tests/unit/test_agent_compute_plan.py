"""Compute plan, from tables: (desired, observed, shutdown records) -> actions."""

from __future__ import annotations

import pytest

from agent.compute import (AcpiShutdown, Define, DomainObserved, FinishOperation, ForgetShutdown,
                           PowerOff, Reboot, Remove, RenderedDomain, Resume, Start, plan_compute)
from agent.records import Shutdown
from agent.spec import OperationSpec
from agent.testing import make_instance

IID = "i-cccccccccccccccccccc"
NOW = 1_000_000.0
R = RenderedDomain("<domain/>", "hash-1")


def dom(state, h="hash-1", iid=IID):
    return DomainObserved(iid, state, h)


def plan(inst, observed=None, shutdown=None, done=(), rendered=R, now=NOW):
    return plan_compute([inst], {inst.id: rendered} if rendered else {},
                        {d.instance_id: d for d in (observed or [])},
                        {inst.id: shutdown} if shutdown else {}, set(done), now)


running = make_instance(IID, power="running")
stopped = make_instance(IID, power="stopped", stop_timeout_s=30)
forced = make_instance(IID, power="stopped", force_stop=True)


@pytest.mark.parametrize("name, inst, observed, shutdown, expected", [
    ("new running", running, [], None, [Define(IID, R.xml), Start(IID)]),
    ("new stopped", stopped, [], None, [Define(IID, R.xml)]),
    ("adopt running as is", running, [dom("running")], None, []),
    ("adopt, config changed: redefine only", running, [dom("running", "old")], None,
     [Define(IID, R.xml)]),
    ("start stopped", running, [dom("stopped")], None, [Start(IID)]),
    ("resume paused", running, [dom("paused")], None, [Resume(IID)]),
    ("start cancels shutdown", running, [dom("running")], Shutdown(NOW - 5, NOW - 5),
     [ForgetShutdown(IID)]),
    ("graceful stop", stopped, [dom("running")], None, [AcpiShutdown(IID)]),
    ("stop waiting", stopped, [dom("running")], Shutdown(NOW - 10, NOW - 1), []),
    ("stop re-sends ACPI", stopped, [dom("running")], Shutdown(NOW - 10, NOW - 6),
     [AcpiShutdown(IID)]),
    ("stop timeout powers off", stopped, [dom("running")], Shutdown(NOW - 31, NOW - 1),
     [PowerOff(IID, "no shutdown after 30s")]),
    ("force stop", forced, [dom("running")], None, [PowerOff(IID, "forced stop")]),
    ("stopped done", stopped, [dom("stopped")], Shutdown(NOW - 3, NOW - 3), [ForgetShutdown(IID)]),
    ("stopped steady", stopped, [dom("stopped")], None, []),
    ("guest shutting down counts as running", stopped, [dom("shutting_down")], None,
     [AcpiShutdown(IID)]),
])
def test_power_table(name, inst, observed, shutdown, expected):
    assert plan(inst, observed, shutdown) == expected, name


def test_instance_not_ready_is_left_alone_not_removed():
    assert plan(running, [dom("running", "old")], rendered=None) == []


def test_foreign_and_gone_domains():
    acts = plan_compute([], {}, {"i-gone": dom("running", iid="i-gone")},
                        {"i-old": Shutdown(1, 1)}, set(), NOW)
    assert acts == [Remove("i-gone"), ForgetShutdown("i-old")]


@pytest.mark.parametrize("power, state, done, expected", [
    ("running", "running", set(), [Reboot(IID, "op-1", False), Reboot(IID, "op-2", True)]),
    ("running", "running", {"op-1"}, [Reboot(IID, "op-2", True)]),
    ("running", "running", {"op-1", "op-2"}, []),
    ("running", "stopped", set(), [Start(IID),
                                   FinishOperation(IID, "op-1", True, "instance was not running; started"),
                                   FinishOperation(IID, "op-2", True, "instance was not running; started")]),
    ("stopped", "stopped", {"op-1"}, [FinishOperation(IID, "op-2", False, "instance is stopped")]),
])
def test_reboot_operations_run_once(power, state, done, expected):
    inst = make_instance(IID, power=power, operations=[OperationSpec(id="op-1", kind="reboot"),
                                                       OperationSpec(id="op-2", kind="reboot",
                                                                     force=True)])
    assert plan(inst, [dom(state)], done=done) == expected
