"""Spec long-poll: woken by the in-process notifier, and by the DB re-check."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, text

from tests.controller_factories import region  # noqa: F401 - fixture


def _poll_in_thread(agent, after: int, wait: float) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        t0 = time.monotonic()
        out["spec"] = agent.spec(after=after, wait=wait)
        out["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_change_wakes_the_long_poll_through_the_notifier(region):
    region.settings.spec_poll_interval_s = 30  # only the notifier can wake it in time
    agent = region.register_host()
    net = region.network()
    image = region.image()
    current = agent.spec()["generation"]
    thread, out = _poll_in_thread(agent, current, wait=20)
    time.sleep(0.3)
    assert thread.is_alive(), "must wait while nothing changed"
    inst = region.create_instance(net, image)
    thread.join(10)
    assert not thread.is_alive()
    assert out["spec"]["generation"] > current
    assert [i["id"] for i in out["spec"]["instances"]] == [inst["id"]]
    assert out["elapsed"] < 5


def test_direct_database_change_is_seen_by_the_recheck(region):
    agent = region.register_host()
    current = agent.spec()["generation"]
    thread, out = _poll_in_thread(agent, current, wait=20)
    time.sleep(0.3)
    # Another process (or an operator in SQL) bumps the generation: no notifier involved.
    engine = create_engine(region.db.url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE hosts SET generation = generation + 1 WHERE id = :id"),
                     {"id": agent.host_id})
    engine.dispose()
    thread.join(10)
    assert out["spec"]["generation"] == current + 1
    assert out["elapsed"] < 5


def test_wait_expires_with_the_current_spec_and_after_minus_one_is_immediate(region):
    agent = region.register_host()
    current = agent.spec()["generation"]
    t0 = time.monotonic()
    assert agent.spec(after=current, wait=0.6)["generation"] == current
    assert 0.5 <= time.monotonic() - t0 < 5
    t0 = time.monotonic()
    agent.spec(after=-1, wait=30)
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    agent.spec(after=current - 1, wait=30)  # already newer: at once
    assert time.monotonic() - t0 < 2


def test_shared_poller_wakes_a_waiter_whose_after_is_older_even_on_its_first_look(region):
    """A change landing after the long-poll read its generation but before the shared poller
    first sampled that host used to be taken as the poller's baseline (never a change), and the
    long-poll slept until its deadline. The poller compares with the waiter's ``after``."""
    import asyncio

    from controller.services.notify import GenerationNotifier, poll_generations

    agent = region.register_host()
    current = agent.spec()["generation"]
    other = region.register_host(name="hv-02")
    other_gen = other.spec()["generation"]

    async def scenario() -> tuple[bool, bool]:
        notifier = GenerationNotifier()
        event = notifier.subscribe(agent.host_id, current)
        untouched = notifier.subscribe(other.host_id, other_gen)
        engine = create_engine(region.db.url)
        with engine.begin() as conn:  # behind this process's back, before the first poll
            conn.execute(text("UPDATE hosts SET generation = generation + 1 WHERE id = :id"),
                         {"id": agent.host_id})
        engine.dispose()
        poller = asyncio.create_task(poll_generations(region.db, notifier, 0.05))
        try:
            await asyncio.wait_for(event.wait(), 3)
            await asyncio.sleep(0.2)  # several more polls
            return event.is_set(), untouched.is_set()
        finally:
            poller.cancel()

    woken, other_woken = asyncio.run(scenario())
    assert woken
    assert not other_woken, "a host whose generation did not pass after must not be woken"
