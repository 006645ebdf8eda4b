"""Compiled host specs, kept per (host, generation).

A host's spec is a function of the database, and every change to what goes
into it bumps the host's generation in the same transaction (``notify``), so a
spec compiled for generation G stays right until the generation moves. The
long-poll answers from here: an agent's timed-out long-poll (500 hosts every
25 s) and the hosts woken by a change that another long-poll of the same host
already compiled cost a dictionary lookup instead of a compile.

Two guards for a change that forgets its bump:

* an entry is used for at most ``max_age_s`` (a missed bump reaches the
  agent within that, as it did before through the periodic recompile);
* with ``check`` on (``MINIECS_SPEC_CACHE_CHECK=1``, set by the test suite),
  every answer is also compiled afresh and compared with what the caches would
  have answered; a difference raises ``StaleSpec``, naming the host and
  generation, so the test that made the change without a bump fails instead
  of an agent missing it in production.

Below the whole-spec cache, ``Fragments`` keeps the parts a spec is assembled
from (``specs.compile_host_spec``): the host's own part (instances, disks,
storage, migrations) per ``hosts.local_generation``, and one part per VPC the
host has a port in (the network, the NICs' groups and firewalls, the member
sets) per ``vpcs.net_generation`` and what the host's own part puts in it (its
VTEP, its NICs there, their EIPs). A create bumps its own host
(``notify.bump_generations``: generation and local generation: its own part is
read again, its unchanged instances and other VPC parts kept) and, for the new
port, the VPC's other hosts through ``notify.bump_network`` (generation and the
VPC's net generation): those recompile one VPC's part, not their whole spec.
The hosts one change wakes are read together (``api/agent.py``
``_spec_bodies``). And that part is cut, in
memory, from the VPC's shared part (``specs.VpcShared``: ports, gateways, NIC
groups, firewalls, member sets), kept per VPC and net generation: the first
host woken by a change compiles it from the database, the VPC's other hosts
reuse it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)


class StaleSpec(RuntimeError):
    """A cached spec differs from a fresh compile of the same generation."""


class SpecCache:
    def __init__(self, *, max_hosts: int = 10000, max_age_s: float = 300.0,
                 check: bool = False) -> None:
        self.max_hosts, self.max_age_s, self.check = max_hosts, max_age_s, check
        self._lock = threading.Lock()
        # host id -> (generation, body, stored at (monotonic))
        self._entries: OrderedDict[str, tuple[int, bytes, float]] = OrderedDict()
        self.hits = self.misses = 0
        self.fragments = Fragments(max_hosts=max_hosts)

    def get(self, host_id: str, generation: int) -> bytes | None:
        with self._lock:
            entry = self._entries.get(host_id)
            if entry is None or entry[0] != generation \
                    or time.monotonic() - entry[2] > self.max_age_s:
                self.misses += 1
                return None
            self._entries.move_to_end(host_id)
            self.hits += 1
            return entry[1]

    def put(self, host_id: str, generation: int, body: bytes) -> None:
        with self._lock:
            old = self._entries.get(host_id)
            if old is not None and old[0] > generation:
                return  # a newer generation is already here (a slower reader lost the race)
            self._entries[host_id] = (generation, body, time.monotonic())
            self._entries.move_to_end(host_id)
            while len(self._entries) > self.max_hosts:
                self._entries.popitem(last=False)

    def forget(self, host_id: str) -> None:
        with self._lock:
            self._entries.pop(host_id, None)

    def answer(self, host_id: str, generation: int,
               compile_: Callable[["Fragments | None"], tuple[int, bytes, bool]]) -> bytes:
        """The spec body of ``host_id`` at ``generation`` (just read in the transaction
        ``compile_`` runs in). ``compile_(fragments)`` compiles with the fragment cache (or
        afresh, given None) and returns (the generation the spec was compiled at, its body,
        whether the generation was still that after the compile: on PostgreSQL a read
        transaction sees each statement's latest commits; only a fresh compile's is used,
        by check mode's comparison)."""
        return self.answer_at(host_id, generation, compile_)[1]

    def answer_at(self, host_id: str, generation: int,
                  compile_: Callable[["Fragments | None"], tuple[int, bytes, bool]]
                  ) -> tuple[int, bytes]:
        """``answer`` with the generation of the body (newer than ``generation`` when a
        change committed while it was compiled)."""
        cached = self.get(host_id, generation)
        if cached is not None and not self.check:
            return generation, cached
        fast_generation, fast, _ = compile_(self.fragments)
        if not self.check:
            self.put(host_id, fast_generation, fast)
            return fast_generation, fast
        compiled_generation, body, settled = compile_(None)
        for what, seen, at in (("cached spec", cached, generation),
                               ("spec assembled from fragments", fast, fast_generation)):
            if seen is not None and settled and compiled_generation == at and seen != body:
                log.error("spec cache: host %s: the %s differs from a fresh compile at "
                          "generation %d (a change without its bump)", host_id, what, at)
                self.forget(host_id)
                self.fragments.forget(host_id)
                raise StaleSpec(f"host {host_id}: the {what} differs from a fresh compile at "
                                f"generation {at}: a change without its generation bump")
        self.put(host_id, compiled_generation, body)
        return compiled_generation, body


class Fragments:
    """Compiled parts of host specs: each host's own part per local generation, and each
    (host, VPC) part per the VPC's net generation and what the host's own part puts in it
    (its NICs there, their EIPs, its VTEP): a create on the host changes its own part but
    not its parts of the other VPCs it is in."""

    def __init__(self, max_hosts: int = 10000, max_vpc_parts: int = 50000,
                 max_vpcs: int = 10000) -> None:
        self.max_hosts, self.max_vpc_parts, self.max_vpcs = max_hosts, max_vpc_parts, max_vpcs
        self._lock = threading.Lock()
        self._local: OrderedDict[str, tuple[int, object]] = OrderedDict()
        self._vpc: OrderedDict[tuple[str, str], tuple[tuple, object]] = OrderedDict()
        # VPC id -> (net generation, ``specs.VpcShared``): what every host's part is cut from
        self._shared: OrderedDict[str, tuple[int, object]] = OrderedDict()
        self._inflight: dict[tuple[str, int], threading.Event] = {}
        self.flight_wait_s = 10.0

    def shared(self, vpc_id: str, net_gen: int | None):
        with self._lock:
            return self._shared_hit(vpc_id, net_gen)

    def _shared_hit(self, vpc_id: str, net_gen: int | None):
        """The cached shared part of ``vpc_id`` at ``net_gen`` or None (lock held)."""
        entry = self._shared.get(vpc_id)
        if entry is None or net_gen is None or entry[0] != net_gen:
            return None
        self._shared.move_to_end(vpc_id)
        return entry[1]

    def shared_many(self, wanted: dict[str, int | None],
                    compile_: Callable[[list[str]], dict]) -> dict:
        """The shared parts of ``wanted`` (VPC id -> net generation): cached ones, else
        compiled by ``compile_(vpc ids)`` (one call for all this thread claims). A change
        wakes every host of the VPC at once, and their long-polls run in parallel threads:
        the first to miss a part compiles it, the others wait for that instead of each
        compiling it again."""
        found, claimed, waits = {}, [], []
        with self._lock:
            for vpc_id, gen in wanted.items():
                hit = self._shared_hit(vpc_id, gen)
                if hit is not None:
                    found[vpc_id] = hit
                    continue
                flight = self._inflight.get((vpc_id, gen)) if gen is not None else None
                if flight is not None:
                    waits.append((vpc_id, gen, flight))
                    continue
                if gen is not None:
                    self._inflight[(vpc_id, gen)] = threading.Event()
                claimed.append(vpc_id)
        try:
            if claimed:
                fresh = compile_(claimed)
                found.update(fresh)
                for vpc_id in claimed:
                    self.put_shared(vpc_id, wanted[vpc_id], fresh[vpc_id])
        finally:
            with self._lock:
                for vpc_id in claimed:
                    flight = self._inflight.pop((vpc_id, wanted[vpc_id]), None)
                    if flight is not None:
                        flight.set()
        for vpc_id, gen, flight in waits:
            flight.wait(self.flight_wait_s)
            got = self.shared(vpc_id, gen)
            # the compiler failed, took too long, or a newer generation replaced it
            found[vpc_id] = got if got is not None else compile_([vpc_id])[vpc_id]
        return found

    def put_shared(self, vpc_id: str, net_gen: int | None, part) -> None:
        if net_gen is None:
            return
        with self._lock:
            old = self._shared.get(vpc_id)
            if old is None or old[0] <= net_gen:
                self._shared[vpc_id] = (net_gen, part)
                self._shared.move_to_end(vpc_id)
            while len(self._shared) > self.max_vpcs:
                self._shared.popitem(last=False)

    def local(self, host_id: str, local_gen: int):
        with self._lock:
            entry = self._local.get(host_id)
            if entry is None or entry[0] != local_gen:
                return None
            self._local.move_to_end(host_id)
            return entry[1]

    def last_local(self, host_id: str):
        """The host's own part kept, whatever its generation (None: none kept): what a
        recompile of the part may take unchanged instances from."""
        with self._lock:
            entry = self._local.get(host_id)
            return entry[1] if entry is not None else None

    def put_local(self, host_id: str, local_gen: int, part) -> None:
        with self._lock:
            old = self._local.get(host_id)
            if old is None or old[0] <= local_gen:
                self._local[host_id] = (local_gen, part)
                self._local.move_to_end(host_id)
            while len(self._local) > self.max_hosts:
                self._local.popitem(last=False)

    def vpc(self, host_id: str, vpc_id: str, net_gen: int | None, own: tuple):
        """The host's part of the VPC kept for ``net_gen`` and ``own`` (what the host's own
        part puts in it: ``specs._own_in_vpc``), or None."""
        with self._lock:
            entry = self._vpc.get((host_id, vpc_id))
            if entry is None or net_gen is None or entry[0] != (net_gen, own):
                return None
            self._vpc.move_to_end((host_id, vpc_id))
            return entry[1]

    def put_vpc(self, host_id: str, vpc_id: str, net_gen: int | None, own: tuple,
                part) -> None:
        if net_gen is None:
            return
        with self._lock:
            old = self._vpc.get((host_id, vpc_id))
            if old is None or old[0][0] <= net_gen:
                self._vpc[(host_id, vpc_id)] = ((net_gen, own), part)
                self._vpc.move_to_end((host_id, vpc_id))
            while len(self._vpc) > self.max_vpc_parts:
                self._vpc.popitem(last=False)

    def forget(self, host_id: str) -> None:
        """Drop the host's parts, and every VPC's shared part (a change without its bump
        may have been to any VPC the host is in)."""
        with self._lock:
            self._local.pop(host_id, None)
            for key in [k for k in self._vpc if k[0] == host_id]:
                del self._vpc[key]
            self._shared.clear()
