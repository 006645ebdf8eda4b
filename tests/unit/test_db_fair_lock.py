"""The SQLite writer queue is granted in arrival order and is re-entrant."""

from __future__ import annotations

import threading
import time

from controller.db import FairLock


def test_waiters_get_the_lock_in_arrival_order():
    lock = FairLock()
    order: list[int] = []
    threads = []
    with lock:
        for n in range(6):
            t = threading.Thread(target=lambda n=n: (lock.__enter__(), order.append(n),
                                                     lock.__exit__(None, None, None)))
            t.start()
            threads.append(t)
            time.sleep(0.05)  # each is queued before the next arrives
    for t in threads:
        t.join(5)
    assert order == list(range(6))


def test_reentrant_in_one_thread_and_released_after_the_outermost():
    lock = FairLock()
    got = threading.Event()
    with lock:
        with lock:
            pass
        t = threading.Thread(target=lambda: (lock.__enter__(), got.set(),
                                             lock.__exit__(None, None, None)))
        t.start()
        assert not got.wait(0.2)  # still held by the outer block
    assert got.wait(5)
    t.join(5)


def test_a_releasing_writer_cannot_barge_ahead_of_a_waiting_one():
    """A storm of short writers (one thread releasing and taking again at once) used to keep
    a waiting writer out for as long as the storm lasted."""
    lock = FairLock()
    events: list[str] = []
    lock.__enter__()
    waiter = threading.Thread(target=lambda: (lock.__enter__(), events.append("waiter"),
                                              lock.__exit__(None, None, None)))
    waiter.start()
    time.sleep(0.1)  # the waiter is queued
    for _ in range(200):
        lock.__exit__(None, None, None)
        lock.__enter__()
        events.append("storm")
    lock.__exit__(None, None, None)
    waiter.join(5)
    assert events.index("waiter") <= 1
