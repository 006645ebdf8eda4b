"""The agent daemon: enrol, long-poll the host spec, reconcile, report.

Threads: the main thread runs reconcile passes (on a new spec, every
``resync_interval_s`` for drift, and on libvirt lifecycle events); one thread
long-polls the spec; one posts reports (after every pass, and at least every
``heartbeat_interval_s``). While the controller is unreachable the agent
keeps reconciling against the last spec it saw, so guests keep running.
SIGTERM ends the agent and leaves every guest as it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from agent import __version__, netlink
from agent.backoff import Backoff, jittered
from agent.config import AgentConfig, load_config
from agent.console import ConsolePusher
from agent.controller_client import Channel, ControllerClient, NoChannel, Unauthorized
from agent.errors import AgentError, PermanentError
from agent.libvirt_conn import LibvirtConnection
from agent.metrics import AgentMetrics
from agent.reconcile import Reconciler
from agent.spec import HostCapacity, HostRegistration, HostReport, HostSpec
from agent.state import StateDir, read_json, write_json_atomic
from agent.tunnel import TunnelService
from agent.storage import supports_o_direct
from agent.virt_type import resolve_virt_type

log = logging.getLogger("agent")

MAX_BACKOFF_S = 10.0
CHANNEL_RETRY_S = 300.0  # a controller without the agent channel is asked again after this


def host_capacity(state: StateDir) -> HostCapacity:
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return HostCapacity(vcpus=os.cpu_count() or 1, memory_mib=mem_kib // 1024,
                        disk_gib=shutil.disk_usage(state.root).total // 1024 ** 3)


def process_age_s() -> float:
    """Seconds since this process started (for the first pass's log line)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state = StateDir(cfg.state_dir)
        self.state.ensure()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.client = ControllerClient(cfg.controller_url, cfg.http_timeout_s, cfg.ca_file)
        self.consoles = ConsolePusher(self.state, self.client)
        self.virt_type = resolve_virt_type(cfg.virt_type, self.state)
        self.disk_cache = cfg.disk_cache if cfg.disk_cache != "auto" else (
            "none" if supports_o_direct(self.state.instances_dir) else "writeback")
        self.capacity = host_capacity(self.state)
        self.conn = LibvirtConnection(cfg.libvirt_uri, on_event=self._on_libvirt_event)
        self.reconciler = Reconciler(
            self.state, self.conn, virt_type=self.virt_type, disk_cache=self.disk_cache,
            netns_dir=cfg.router_netns_dir, download=self.client.download, capacity=self.capacity,
            uplink_interface=cfg.uplink_interface)
        self.reconciler.disks.upload = self.client.upload  # image export (snapshot → store)
        self.reconciler.migrations.configure(
            uri_template=cfg.migration_uri, address=cfg.underlay_address,
            timeout_s=cfg.migration_timeout_s, upload=self.client.upload,
            download=self.client.download, latest_spec=lambda: self.spec)
        self.reconciler.disks.download = self.client.download  # snapshot copies from other hosts
        self.metrics = AgentMetrics(self.state)
        self.host_id = ""
        self.config_path: str | None = None  # re-read for a new host_token after a re-key
        self._enrol_lock = threading.Lock()
        self._spec_lock = threading.Lock()
        self._spec: HostSpec | None = None
        self._report_cond = threading.Condition()
        self._report: HostReport | None = None
        self._report_seq = 0
        self._report_resend = False  # a new channel: send the latest report on it at once
        self._channel: Channel | None = None  # the agent channel while it is open

    # -- enrolment -------------------------------------------------------------

    def _load_identity(self) -> bool:
        data = read_json(self.state.host_json)
        if data and data.get("host_id") and data.get("host_token"):
            self.host_id = data["host_id"]
            self.client.token = data["host_token"]
            return True
        return False

    def _adopt_configured_token(self) -> bool:
        """Take the config's ``host_token`` (set after a re-key) into host.json; True if new."""
        token = self.cfg.host_token
        if self.config_path:
            try:
                token = load_config(self.config_path).host_token
            except AgentError as exc:
                log.warning("cannot re-read the config: %s", exc)
        if not token or token == self.client.token or not self.host_id:
            return False
        write_json_atomic(self.state.host_json,
                          {"host_id": self.host_id, "host_token": token}, mode=0o600)
        self.client.token = token
        log.info("using the host token from the config (re-keyed)")
        return True

    def enrol(self, *, force: bool = False) -> None:
        """Register with the enrolment token unless host.json holds an identity; retries until done."""
        with self._enrol_lock:
            if not force and self._load_identity():
                return
            if not self.cfg.enrolment_token:
                raise PermanentError("no host.json and no enrolment_token in the config")
            reg = HostRegistration(name=self.cfg.host_name, zone=self.cfg.zone,
                                   underlay_address=self.cfg.underlay_address,
                                   virt_type=self.virt_type, capacity=self.capacity,  # type: ignore[arg-type]
                                   agent_version=__version__)
            backoff = Backoff()
            while not self.stop.is_set():
                try:
                    got = self.client.register(self.cfg.enrolment_token, reg)
                    break
                except PermanentError:
                    raise
                except AgentError as exc:
                    delay = backoff.failed(exc)
                    log.warning("enrolment failed: %s; retrying in %.1fs", exc, delay)
                    self.stop.wait(delay)
            else:
                return
            write_json_atomic(self.state.host_json,
                              {"host_id": got.host_id, "host_token": got.host_token}, mode=0o600)
            self.host_id = got.host_id
            self.client.token = got.host_token
            log.info("enrolled as host %s", got.host_id)

    # -- spec ------------------------------------------------------------------

    @property
    def spec(self) -> HostSpec | None:
        with self._spec_lock:
            return self._spec

    def _set_spec(self, spec: HostSpec, persist: bool = True) -> None:
        with self._spec_lock:
            changed = self._spec is None or self._spec != spec
            self._spec = spec
        if changed:
            self.wake.set()
            if persist:
                write_json_atomic(self.state.spec_json, {"spec": spec.model_dump(mode="json")},
                                  mode=0o600)

    def _load_last_spec(self) -> None:
        data = read_json(self.state.spec_json)
        if data and data.get("spec"):
            try:
                spec = HostSpec.model_validate(data["spec"])
            except ValueError:
                return
            if spec.host_id == self.host_id:
                log.info("resuming with the last spec seen (generation %d)", spec.generation)
                self._set_spec(spec, persist=False)

    def poll_spec(self) -> None:
        """Take new generations from the controller (thread): on the agent channel, or by
        long-poll when it is off or the controller has none (retried every
        ``CHANNEL_RETRY_S``: the controller may be upgraded meanwhile)."""
        backoff = Backoff()
        first = True
        channel_after = 0.0  # monotonic time from which the channel is tried again
        while not self.stop.is_set():
            spec = self.spec
            after = -1 if first or spec is None else spec.generation
            use_channel = self.cfg.spec_channel and time.monotonic() >= channel_after
            try:
                if use_channel:
                    self._follow_channel(after, backoff)
                    first = False
                    continue
                new = self.client.get_spec(after, round(jittered(self.cfg.long_poll_wait_s), 1))
            except NoChannel:
                log.info("the controller has no agent channel; long-polling")
                channel_after = time.monotonic() + CHANNEL_RETRY_S
                continue
            except Unauthorized:
                self._token_refused()
                continue
            except AgentError as exc:
                delay = backoff.failed(exc)
                log.warning("spec %s failed: %s; keeping the last spec, retry in %.1fs",
                            "channel" if use_channel else "poll", exc, delay)
                self.stop.wait(delay)
                continue
            if backoff.succeeded():
                log.info("controller reachable again")
            first = False
            self._take_spec(spec, new)

    def _follow_channel(self, after: int, backoff: Backoff) -> None:
        """Hold the agent channel open, taking each spec pushed on it, until it closes
        (``TemporaryError``, ``Unauthorized``) or the agent stops. While it is open the
        report thread sends on it; the latest report goes at once on every new channel."""
        channel = self.client.open_channel(after)
        if backoff.succeeded():
            log.info("controller reachable again")
        log.info("agent channel open (holding generation %d)", after)
        with self._report_cond:
            self._channel = channel
            self._report_resend = True
            self._report_cond.notify()
        try:
            while not self.stop.is_set():
                new = channel.receive(timeout=1.0)
                if new is not None:
                    self._take_spec(self.spec, new)
        finally:
            with self._report_cond:
                self._channel = None
            channel.close()

    def _take_spec(self, old: HostSpec | None, new: HostSpec) -> None:
        if old is None or new.generation != old.generation or new != old:
            log.info("spec generation %d (%d instances, %d networks)", new.generation,
                     len(new.instances), len(new.networks))
            self._set_spec(new)

    def _token_refused(self) -> None:
        """The controller refused our token: take a re-keyed one from the config, else
        enrol again."""
        with self._enrol_lock:
            adopted = self._adopt_configured_token()
        if adopted:
            return
        log.warning("controller refused the host token; enrolling again")
        try:
            self.enrol(force=True)
        except AgentError as exc:
            log.error("re-enrolment failed: %s", exc)
            self.stop.wait(MAX_BACKOFF_S)

    # -- reports ---------------------------------------------------------------

    def submit_report(self, report: HostReport) -> None:
        with self._report_cond:
            self._report = report
            self._report_seq += 1
            self._report_cond.notify()

    def post_reports(self) -> None:
        """Send the latest report when there is a new one (or a new channel), and at least
        every heartbeat (thread): on the agent channel when it is open, else by POST."""
        sent_seq = 0
        backoff = Backoff()
        while not self.stop.is_set():
            with self._report_cond:
                if self._report_seq == sent_seq and not self._report_resend:
                    self._report_cond.wait(jittered(self.cfg.heartbeat_interval_s))
                report, seq, channel = self._report, self._report_seq, self._channel
                self._report_resend = False
            if report is None or self.stop.is_set():
                continue
            try:
                if channel is None or not channel.send_report(report):
                    self.client.post_report(report)
                sent_seq = seq
                backoff.succeeded()
                self.consoles.push([i.id for i in report.instances])
            except Unauthorized:
                with self._enrol_lock:
                    adopted = self._adopt_configured_token()  # re-keyed: retry at once
                if not adopted:
                    self.stop.wait(backoff.step_s)  # the poller re-enrols
            except AgentError as exc:
                delay = backoff.failed(exc)
                log.warning("report failed: %s; retry in %.1fs", exc, delay)
                self.stop.wait(delay)

    def _spec_instance_ids(self) -> list[str]:
        spec = self.spec
        return [i.id for i in spec.instances] if spec is not None else []

    # -- main loop -------------------------------------------------------------

    def _on_libvirt_event(self, name: str, event: int) -> None:
        self.wake.set()

    def run(self) -> None:
        self.enrol()
        if self.stop.is_set():
            return
        self._load_last_spec()
        threading.Thread(target=self.poll_spec, name="spec-poll", daemon=True).start()
        threading.Thread(target=self.post_reports, name="report", daemon=True).start()
        threading.Thread(target=self.consoles.run, name="console-push", daemon=True,
                         args=(self.stop, self._spec_instance_ids,
                               self.cfg.console_push_interval_s)).start()
        tunnels = TunnelService(self.client, self.reconciler.network.ns_path,
                                lambda: self.spec, self.stop)
        threading.Thread(target=tunnels.poll, name="tunnel-poll", daemon=True).start()
        if self.cfg.metrics_listen:
            self.metrics.serve(self.cfg.metrics_listen)
        warning = netlink.private_mount_ns_warning()
        if warning:
            log.warning(warning)
        log.info("agent running: host %s, virt type %s, disk cache %s, libvirt %s",
                 self.host_id, self.virt_type, self.disk_cache, self.cfg.libvirt_uri)
        first_pass = True
        while not self.stop.is_set():
            self.wake.wait(self.cfg.resync_interval_s)
            self.wake.clear()
            spec = self.spec
            if spec is None or self.stop.is_set():
                continue  # never reconcile against "nothing": that would delete guests
            t0 = time.monotonic()
            cpu0 = time.process_time()
            try:
                report = self.reconciler.run_pass(spec)
            except Exception:
                log.exception("reconcile pass crashed; next pass in %.0fs", self.cfg.resync_interval_s)
                self.metrics.crashed()
                continue
            took = time.monotonic() - t0
            self.metrics.observe_pass(took, report, self.reconciler.firewall.last_apply_s)
            if first_pass:
                first_pass = False
                log.info("first pass: %d of %d instance(s) running, %.2fs; %.2fs after the "
                         "process started (%s); CPU %.2fs before the pass, %.2fs in it",
                         sum(i.power == "running" for i in report.instances),
                         len(report.instances), took, process_age_s(),
                         " ".join(f"{k} {v:.2f}s" for k, v in self.reconciler.timings.items()),
                         cpu0, time.process_time() - cpu0)
            elif took > 2:
                log.info("reconcile pass took %.2fs", took)
            self.submit_report(report)
        log.info("agent stopping; guests are left running")

    def shutdown(self, *_args) -> None:
        self.stop.set()
        self.wake.set()
        with self._report_cond:
            self._report_cond.notify_all()


def local_download(url: str, part: Path) -> None:
    """Downloader for --spec mode: ``file://`` URLs only."""
    if not url.startswith("file://"):
        raise PermanentError(f"--spec mode fetches only file:// images, not {url}")
    shutil.copyfile(url[len("file://"):], part)


def run_local_spec(agent: Agent, spec_file: str, *, once: bool) -> int:
    """Reconcile against a spec file: one pass (``once``) or until SIGTERM."""
    spec = HostSpec.model_validate_json(Path(spec_file).read_text())
    agent.reconciler.storage.download = local_download
    while True:
        report = agent.reconciler.run_pass(spec)
        if once:
            print(report.model_dump_json(indent=1))
            return 0
        if agent.stop.wait(agent.cfg.resync_interval_s):
            return 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["install-unit"]:
        from agent import install_unit
        return install_unit.main(args_in[1:])
    parser = argparse.ArgumentParser(prog="miniecs-agent", description=__doc__.split("\n")[0],
                                     epilog="`miniecs-agent install-unit --help`: install the "
                                            "systemd unit")
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--spec", metavar="FILE",
                        help="reconcile against this HostSpec JSON instead of the controller "
                             "(no enrolment, no reports; image URLs may be file://)")
    parser.add_argument("--once", action="store_true",
                        help="with --spec: run one pass, print the report as JSON and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        agent = Agent(load_config(args.config))
        agent.config_path = args.config
    except AgentError as exc:
        log.error("cannot start: %s", exc)
        return 2
    signal.signal(signal.SIGTERM, agent.shutdown)
    signal.signal(signal.SIGINT, agent.shutdown)
    try:
        if args.spec:
            return run_local_spec(agent, args.spec, once=args.once)
        agent.run()
    except PermanentError as exc:
        log.error("giving up: %s", exc)
        return 2
    finally:
        agent.conn.close()
        agent.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
