"""Firewall benchmark: miniecs's security-group firewall vs libvirt's nwfilter.

On one throwaway "hypervisor" (a network namespace with a bridge and plain
tap devices, no guests), time miniecs's real ``FirewallReconciler`` for

* a full apply from nothing (what an agent restart after a reboot costs),
* one rule added to a group every NIC is in (every NIC's chain changes),
* one NIC added,

at 100 NICs x 50 rules, 1,000 NICs x 10 rules and 200 NICs x 422 rules.
Then the same rules through libvirt's nwfilter (a filter bound to each tap
with an nwfilter binding, on a private libvirtd in the namespace) at up to
100 NICs x 10 rules: bind all, change the filter by one rule, bind three more
taps one by one; then miniecs on the same set, right after it in the same run.
nwfilter costs about half a second per NIC on an idle machine and several
seconds on a loaded one, so it runs on as many taps as fit a 5-minute budget
(BENCH_NWFILTER_BUDGET_S), judged from the first 10, and is also compared per
NIC against miniecs's 1,000-NIC figures. Prints every figure, the ratios and a
final HEADLINE line.

Every NIC added joins the group the others are in, so its address joins the
group's ipset too. Per-step timings and the programs started for a NIC added
are printed, and the load average beside each figure (the machine is shared).

Run as root: ``.venv/bin/python bench/firewall.py`` (about 5-10 minutes; must
stay under 15).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import proc  # noqa: E402
from agent.firewall import FirewallReconciler  # noqa: E402
from agent.spec import AddressSetSpec, FirewallRuleSpec, NicFirewallSpec, NicSpec  # noqa: E402
from tests.rig.rig import RigHost  # noqa: E402

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
NS = f"mbench-fw{os.getpid() % 100000}"
BRIDGE = "mbr-benchfw001"
NWFILTER_NICS = int(os.environ.get("BENCH_NWFILTER_NICS", "100"))
NWFILTER_RULES = 10
NWFILTER_ADDS = 3  # NICs bound one by one after the full bind (median)
# nwfilter's time per tap grows with the machine's load (about 0.5 s idle, 3 s at a load of
# 12 on 2 CPUs): as many taps (up to NWFILTER_NICS) as fit this budget for bind + change
NWFILTER_BUDGET_S = float(os.environ.get("BENCH_NWFILTER_BUDGET_S", "300"))
SCALES = ((100, 50), (1000, 10), (200, 422))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))  # miniecs figures: median of REPEAT runs


def sh(*argv: str, check: bool = True, inp: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, input=inp,
                          timeout=600)


def enter_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def tap(i: int) -> str:
    return f"mtapbench{i:06d}"


def make_taps(start: int, count: int) -> None:
    lines = []
    for i in range(start, start + count):
        lines += [f"tuntap add dev {tap(i)} mode tap", f"link set {tap(i)} master {BRIDGE} up"]
    sh("ip", "-batch", "-", inp="\n".join(lines) + "\n")


def rules_for(count: int, extra: int = 0) -> list[FirewallRuleSpec]:
    """A group's rules: a mix of ports, ranges, CIDRs, a group reference and drops."""
    out = []
    for k in range(count + extra):
        kind = k % 5
        out.append(FirewallRuleSpec(
            id=f"sgr-bench{k:06d}", group_id="sg-bench", priority=1 + k % 100,
            policy="drop" if kind == 4 else "accept",
            protocol="udp" if kind == 3 else "tcp",
            port_min=1000 + k, port_max=1000 + k + (10 if kind == 1 else 0),
            peer_cidr=None if kind == 2 else f"10.{k % 250}.0.0/16",
            peer_set="mecs-g-bench" if kind == 2 else None,
            peer_group_id="sg-bench" if kind == 2 else None))
    out.sort(key=lambda r: (r.priority, 0 if r.policy == "drop" else 1, r.id))
    return out


def nics_for(count: int, rules: list[FirewallRuleSpec]) -> list[NicSpec]:
    fw = NicFirewallSpec(ingress=rules, egress=[], ct_zone=11)
    return [NicSpec(id=f"eni-bench{i:06d}", mac=f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                    f"{i & 255:02x}", ip=f"10.{100 + (i >> 16)}.{i >> 8 & 255}.{i & 255}",
                    prefix_len=8, gateway="10.0.0.1", vpc_id="vpc-bench", vswitch_id="vsw-bench",
                    bridge=BRIDGE, tap=tap(i), security_group_ids=["sg-bench"], firewall=fw)
            for i in range(count)]


def members(count: int) -> list[AddressSetSpec]:
    return [AddressSetSpec(name="mecs-g-bench", group_id="sg-bench",
                           ips=[f"10.{100 + (i >> 16)}.{i >> 8 & 255}.{i & 255}"
                                for i in range(count)])]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def count_rules() -> int:
    return sum(1 for ln in sh("iptables-save", "-t", "filter").stdout.splitlines()
               if ln.startswith("-A mecs-"))


ADDS = int(os.environ.get("BENCH_NIC_ADDS", "5"))  # NICs added one by one per run


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_miniecs(n: int, r: int) -> dict:
    """One run at ``n`` NICs x ``r`` rules: full apply, one rule on all NICs, ADDS NICs added.

    Each NIC added joins the group every NIC is in, so its address also joins the
    group's member set (rules name the group): the realistic case, not a NIC whose
    address was there already.
    """
    make_taps(0, n + ADDS)
    started: list[str] = []

    def counting(argv, **kw):
        started.append(argv[0])
        return proc.run(argv, **kw)

    fwr = FirewallReconciler(run=counting, verify_interval_s=3600)
    ok = lambda errs: (_ for _ in ()).throw(RuntimeError(errs)) if errs else None  # noqa: E731
    full = timed(lambda: ok(fwr.sync(nics_for(n, rules_for(r)), members(n))))
    installed = count_rules()
    more = nics_for(n + ADDS, rules_for(r, extra=1))
    one_rule = timed(lambda: ok(fwr.sync(more[:n], members(n))))
    adds, steps, progs = [], [], []
    for k in range(1, ADDS + 1):
        started.clear()
        adds.append(timed(lambda: ok(fwr.sync(more[:n + k], members(n + k)))))
        steps.append(dict(getattr(fwr, "last_steps", {})))  # (older agents: none)
        progs.append(list(started))
    # a second agent (restart): reads everything back, finds nothing to do but its own
    # anti-spoofing table, which it rebuilds once (atomically)
    fresh = FirewallReconciler(verify_interval_s=3600)
    noop = timed(lambda: ok(fresh.sync(more, members(n + ADDS))))
    ok(fwr.sync([], []))
    for r_ in (fwr, fresh):
        if hasattr(r_, "nft"):
            r_.nft.close()
    sh("ip", "-batch", "-", inp="".join(f"link del {tap(i)}\n" for i in range(n + ADDS)))
    names = sorted({k for st in steps for k in st})
    return {"full": full, "one_rule": one_rule, "one_nic": statistics.median(adds),
            "one_nic_max": max(adds), "restart_noop": noop, "rules": installed,
            "steps": {k: statistics.median(st.get(k, 0.0) for st in steps) for k in names},
            "programs": statistics.median(len(p) for p in progs),
            "program_names": sorted({x for p in progs for x in p})}


def median_runs(n: int, r: int) -> dict:
    runs = [bench_miniecs(n, r) for _ in range(REPEAT)]
    out = {k: statistics.median(x[k] for x in runs) for k in runs[0]
           if isinstance(runs[0][k], (int, float))}
    out["steps"] = {k: statistics.median(x["steps"].get(k, 0.0) for x in runs)
                    for k in runs[0]["steps"]}
    out["program_names"] = sorted({p for x in runs for p in x["program_names"]})
    return out


def describe_add(res: dict) -> str:
    steps = ", ".join(f"{k} {v * 1000:.2f}" for k, v in res["steps"].items() if v >= 0.00005)
    return (f"    one NIC added: median {res['one_nic'] * 1000:.2f} ms (worst of {ADDS} "
            f"{res['one_nic_max'] * 1000:.2f} ms); steps in ms: {steps}; programs started: "
            f"{res['programs']:.0f} ({', '.join(res['program_names']) or 'none'})")


FILTER_XML = """<filter name='{name}' chain='root'>
{rules}
  <rule action='drop' direction='in' priority='1000'><all/></rule>
</filter>"""


def nwfilter_xml(name: str, rules: list[FirewallRuleSpec]) -> str:
    lines = []
    for rule in rules:
        proto = rule.protocol
        attrs = f"dstportstart='{rule.port_min}' dstportend='{rule.port_max}'"
        if rule.peer_cidr:
            net, mask = rule.peer_cidr.split("/")
            attrs += f" srcipaddr='{net}' srcipmask='{mask}'"
        action = "accept" if rule.policy == "accept" else "drop"
        lines.append(f"  <rule action='{action}' direction='in' priority='{rule.priority}'>"
                     f"<{proto} {attrs}/></rule>")
    return FILTER_XML.format(name=name, rules="\n".join(lines))


def binding_xml(i: int, nic: NicSpec) -> str:
    return (f"<filterbinding><owner><name>bench{i}</name><uuid>{uuid.uuid4()}</uuid></owner>"
            f"<portdev name='{nic.tap}'/><mac address='{nic.mac}'/>"
            f"<filterref filter='mecs-bench'><parameter name='IP' value='{nic.ip}'/>"
            f"</filterref></filterbinding>")


def bench_nwfilter(host: RigHost, most: int, r: int, work: Path) -> dict[str, float]:
    """nwfilter on up to ``most`` taps: as many as fit NWFILTER_BUDGET_S for the bind-all and
    the one-rule change (each costs about the same per tap), judged from the first 10."""
    virsh = ["virsh", "-q", "-c", host.libvirt_uri]
    make_taps(0, most + NWFILTER_ADDS)
    nics = nics_for(most + NWFILTER_ADDS, rules_for(r))
    rules = [x for x in rules_for(r) if x.peer_set is None] + \
        [FirewallRuleSpec(id="x", group_id="g", priority=50, policy="accept", protocol="tcp",
                          port_min=22, port_max=22, peer_cidr="10.1.0.0/16")] * (
        r - len([x for x in rules_for(r) if x.peer_set is None]))
    (work / "f.xml").write_text(nwfilter_xml("mecs-bench", rules))
    sh(*virsh, "nwfilter-define", str(work / "f.xml"))
    files = []
    for i, nic in enumerate(nics):
        p = work / f"b{i}.xml"
        p.write_text(binding_xml(i, nic))
        files.append(p)

    def bind(lo: int, hi: int) -> None:
        for p in files[lo:hi]:
            sh(*virsh, "nwfilter-binding-create", str(p))

    probe = min(10, most)
    first = timed(lambda: bind(0, probe))
    n = max(probe, min(most, int(NWFILTER_BUDGET_S / (2 * first / probe))))
    full = first + timed(lambda: bind(probe, n))
    changed = rules + [FirewallRuleSpec(id="y", group_id="g", priority=60, policy="accept",
                                        protocol="tcp", port_min=9999, port_max=9999,
                                        peer_cidr="10.2.0.0/16")]
    dumped = sh(*virsh, "nwfilter-dumpxml", "mecs-bench").stdout
    uid = dumped.split("<uuid>", 1)[1].split("</uuid>", 1)[0]
    (work / "f2.xml").write_text(nwfilter_xml("mecs-bench", changed).replace(
        "chain='root'>", f"chain='root'>\n  <uuid>{uid}</uuid>", 1))
    one_rule = timed(lambda: sh(*virsh, "nwfilter-define", str(work / "f2.xml")))
    one_nic = statistics.median(timed(lambda i=i: bind(i, i + 1))
                                for i in range(n, n + NWFILTER_ADDS))
    return {"full": full, "one_rule": one_rule, "one_nic": one_nic, "nics": n}


def clear_after_nwfilter(count: int) -> None:
    """Taps and every rule libvirt left in the bench's namespace go (nothing else is there),
    so miniecs's side-by-side run starts from the same empty tables as its other runs."""
    sh("ip", "-batch", "-", inp="".join(f"link del {tap(i)}\n" for i in range(count)),
       check=False)
    for table in ("filter", "nat", "mangle", "raw"):
        sh("iptables", "-t", table, "-F", check=False)
        sh("iptables", "-t", table, "-X", check=False)
    for table in ("filter", "nat"):
        sh("ebtables", "-t", table, "-F", check=False)
        sh("ebtables", "-t", table, "-X", check=False)


def main() -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mecs-bench-fw-", dir="/var/tmp"))
    sh("ip", "netns", "add", NS)
    host = RigHost(name="benchfw", netns=NS, root=str(work / "host"), underlay_ip="192.0.2.250")
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "-n", NS, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", NS, "link", "set", BRIDGE, "up")
        # the rig's libvirtd listens on the host's underlay address: give it one, in the
        # namespace only (a veth pair with both ends inside it, no route out)
        sh("ip", "-n", NS, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0p")
        sh("ip", "-n", NS, "addr", "add", "192.0.2.250/24", "dev", "ul0")
        sh("ip", "-n", NS, "link", "set", "ul0", "up")
        enter_netns(NS)
        t_start = time.monotonic()
        print(f"start: {load()} ({os.cpu_count()} CPUs); miniecs figures are medians of "
              f"{REPEAT} runs, a NIC added the median of {ADDS} in each", flush=True)
        results = {}
        for n, r in SCALES:
            res = median_runs(n, r)
            results[(n, r)] = res
            print(f"miniecs  {n:5d} NICs x {r:3d} rules ({res['rules']:6.0f} iptables rules): "
                  f"full apply {res['full']:.3f} s, one rule on all NICs {res['one_rule']:.3f} s, "
                  f"one NIC added {res['one_nic']:.4f} s, agent restart (read back) "
                  f"{res['restart_noop']:.3f} s; {load()}", flush=True)
            print(describe_add(res), flush=True)
        # side by side: nwfilter, then miniecs on the same 100 x 10 set, in this run
        holder = None
        try:
            for attempt in (1, 2):  # libvirtd -d has failed to start once on a loaded machine
                try:
                    host.start_daemons()
                    break
                except subprocess.CalledProcessError as exc:
                    print(f"libvirtd start {attempt} failed: {exc.stderr or exc.stdout}",
                          file=sys.stderr, flush=True)
                    host.stop_daemons()
                    if host.holder_pid:
                        subprocess.run(["kill", str(host.holder_pid)], check=False)
                    if attempt == 2:
                        raise
                    time.sleep(3)
            holder = host.holder_pid
            print(f"nwfilter: private libvirtd up; {load()}", flush=True)
            nw = bench_nwfilter(host, NWFILTER_NICS, NWFILTER_RULES, work)
        except subprocess.CalledProcessError as exc:
            print(f"nwfilter step failed: {exc.cmd}: {exc.stderr}", file=sys.stderr)
            raise
        finally:
            host.stop_daemons()
            if holder:
                subprocess.run(["kill", str(holder)], check=False, stderr=subprocess.DEVNULL)
            clear_after_nwfilter(NWFILTER_NICS + NWFILTER_ADDS)
        nn = nw["nics"]
        print(f"nwfilter {nn:5d} NICs x {NWFILTER_RULES:3d} rules: full apply "
              f"{nw['full']:.3f} s ({nw['full'] / nn:.3f} s/NIC), one rule on all NICs "
              f"{nw['one_rule']:.3f} s, one NIC added {nw['one_nic']:.3f} s (median of "
              f"{NWFILTER_ADDS}); {load()}", flush=True)
        m100 = median_runs(nn, NWFILTER_RULES)
        print(f"miniecs  {nn:5d} NICs x {NWFILTER_RULES:3d} rules: full apply "
              f"{m100['full']:.3f} s, one rule {m100['one_rule']:.4f} s, one NIC "
              f"{m100['one_nic']:.4f} s; {load()}", flush=True)
        print(describe_add(m100), flush=True)
        big = results[(1000, 10)]
        ratios = {
            f"full apply (same {nn}x{NWFILTER_RULES} set)": nw["full"] / m100["full"],
            "full apply per NIC (vs 1000x10)": (nw["full"] / nn) / (big["full"] / 1000),
            f"one-rule change ({nn} NICs)": nw["one_rule"] / m100["one_rule"],
            "one-rule change per NIC (vs 1000 NICs)":
                (nw["one_rule"] / nn) / (big["one_rule"] / 1000),
            f"one NIC added (same {nn}x{NWFILTER_RULES} set)":
                nw["one_nic"] / m100["one_nic"],
        }
        for k, v in ratios.items():
            print(f"ratio nwfilter/miniecs, {k}: {v:.0f}x")
        r422 = results[(200, 422)]
        full10k = max(results[(1000, 10)]["full"], results[(100, 50)]["full"])
        targets = [
            ("10,000-rule full apply < 1 s", full10k < 1.0),
            ("200x422 full apply < 3 s", r422["full"] < 3.0),
            ("one-rule change on 1,000 NICs < 0.1 s", big["one_rule"] < 0.1),
            ("one NIC at 200x422 < 0.2 s", r422["one_nic"] < 0.2),
            (">= 100x nwfilter on each figure", min(ratios.values()) >= 100),
        ]
        for name, met in targets:
            print(f"target {name}: {'met' if met else 'MISSED'}")
        took = time.monotonic() - t_start
        print(f"bench took {took / 60:.1f} min; end: {load()}")
        r = list(ratios.values())
        print(f"HEADLINE: miniecs security groups: full apply 10,000 rules {full10k:.2f} s, "
              f"200x422 {r422['full']:.2f} s (Neutron iptables: 12.8 s); one rule on 1,000 NICs "
              f"{big['one_rule'] * 1000:.0f} ms; one NIC added at 200x422 "
              f"{r422['one_nic'] * 1000:.1f} ms (Neutron: 33 s), at {nn}x10 "
              f"{m100['one_nic'] * 1000:.1f} ms vs nwfilter {nw['one_nic'] * 1000:.0f} ms; "
              f"x nwfilter: full {r[0]:.0f}x ({r[1]:.0f}x per NIC), one-rule {r[2]:.0f}x "
              f"({r[3]:.0f}x per NIC), NIC add {r[4]:.0f}x; "
              f"{sum(m for _n, m in targets)}/{len(targets)} targets met")
        return 0
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
