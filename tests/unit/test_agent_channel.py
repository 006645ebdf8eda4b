"""The agent's side of the agent channel (agent/main.py): specs taken from it, reports sent
on it, the long-poll and POSTs when the controller has none."""

from __future__ import annotations

import threading
import time

from agent.config import AgentConfig
from agent.controller_client import NoChannel
from agent.errors import TemporaryError
from agent.main import Agent
from agent.spec import HostReport, HostSpec
from agent.state import StateDir

HOST = "h-test0000000000000001"


def _spec(generation: int) -> HostSpec:
    return HostSpec(host_id=HOST, generation=generation)


def _report(generation: int) -> HostReport:
    return HostReport(host_id=HOST, generation_applied=generation, generation_seen=generation)


class FakeChannel:
    def __init__(self, specs: list[HostSpec], close_after: bool = False) -> None:
        self.specs, self.close_after = list(specs), close_after
        self.sent: list[HostReport] = []
        self.closed = False

    def receive(self, timeout: float) -> HostSpec | None:
        if self.specs:
            return self.specs.pop(0)
        if self.close_after:
            raise TemporaryError("channel closed (1006)")
        time.sleep(min(timeout, 0.05))
        return None

    def send_report(self, report: HostReport) -> bool:
        self.sent.append(report)
        return True

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self, channels: list | None) -> None:
        self.channels = channels  # None: the controller has no channel
        self.polled: list[int] = []
        self.posted: list[HostReport] = []
        self.token = "t"

    def open_channel(self, after: int):
        if self.channels is None:
            raise NoChannel("controller has no agent channel")
        if not self.channels:
            time.sleep(0.05)
            raise TemporaryError("refused")
        return self.channels.pop(0)

    def get_spec(self, after: int, wait_s: float) -> HostSpec:
        self.polled.append(after)
        time.sleep(0.02)
        return _spec(max(after, 0) + 1)

    def post_report(self, report: HostReport) -> None:
        self.posted.append(report)


class NoConsoles:
    def push(self, _ids) -> None:
        pass


def _agent(tmp_path, client: FakeClient) -> Agent:
    """An Agent with only what its spec and report threads use (no libvirt)."""
    agent = Agent.__new__(Agent)
    agent.cfg = AgentConfig(controller_url="http://127.0.0.1:9", host_name="hv", zone="z",
                            underlay_address="192.0.2.1", state_dir=tmp_path,
                            heartbeat_interval_s=0.2)
    agent.state = StateDir(tmp_path)
    agent.state.ensure()
    agent.stop, agent.wake = threading.Event(), threading.Event()
    agent.client, agent.consoles = client, NoConsoles()
    agent.host_id = HOST
    agent._enrol_lock, agent._spec_lock = threading.Lock(), threading.Lock()
    agent._spec = None
    agent._report_cond = threading.Condition()
    agent._report, agent._report_seq = None, 0
    agent._report_resend, agent._channel = False, None
    return agent


def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


def _run(agent: Agent) -> list[threading.Thread]:
    threads = [threading.Thread(target=agent.poll_spec, daemon=True),
               threading.Thread(target=agent.post_reports, daemon=True)]
    for t in threads:
        t.start()
    return threads


def _stop(agent: Agent, threads) -> None:
    agent.stop.set()
    with agent._report_cond:
        agent._report_cond.notify_all()
    for t in threads:
        t.join(5)


def test_specs_arrive_and_reports_leave_on_the_channel(tmp_path):
    channel = FakeChannel([_spec(3), _spec(4)])
    client = FakeClient([channel])
    agent = _agent(tmp_path, client)
    threads = _run(agent)
    try:
        _until(lambda: agent.spec is not None and agent.spec.generation == 4)
        agent.submit_report(_report(4))
        _until(lambda: channel.sent and channel.sent[-1].generation_applied == 4)
        assert client.polled == [] and client.posted == []  # no long-poll, no POST
    finally:
        _stop(agent, threads)
    assert channel.closed


def test_without_a_channel_the_agent_long_polls_and_posts(tmp_path):
    client = FakeClient(None)
    agent = _agent(tmp_path, client)
    threads = _run(agent)
    try:
        _until(lambda: agent.spec is not None and agent.spec.generation >= 2)
        agent.submit_report(_report(2))
        _until(lambda: any(r.generation_applied == 2 for r in client.posted))
        assert client.polled[0] == -1  # the first poll asks for the spec at once
    finally:
        _stop(agent, threads)


def test_a_new_channel_gets_the_latest_report_at_once(tmp_path):
    """A channel that closes is opened again; the latest report goes on the new one at
    once (the controller may have restarted and lost nothing but that)."""
    first = FakeChannel([_spec(5)], close_after=True)
    second = FakeChannel([])
    client = FakeClient([first, second])
    agent = _agent(tmp_path, client)
    agent.cfg = agent.cfg.model_copy(update={"heartbeat_interval_s": 60.0})
    agent.submit_report(_report(5))
    threads = _run(agent)
    try:
        _until(lambda: second.sent and second.sent[-1].generation_applied == 5)
    finally:
        _stop(agent, threads)
    assert agent.spec.generation == 5 and first.closed
