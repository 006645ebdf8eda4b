"""Security groups on this host: observe, plan (``agent.firewall_render``), apply; cut flows.

One ``sync`` per reconcile pass:

1. br_netfilter must hand bridged IPv4 to iptables in this network namespace;
2. ipsets first (rules may name them), only when a set or its members
   changed: members joining or leaving go over netlink from this process
   (``agent.ipset_nl``, no program started); a set to make goes with the rest
   of the changes in one ``ipset restore``;
3. anti-spoofing: the nftables table ``bridge mecs-spoof`` through libnftables
   in this process (``agent.nft``) — a NIC added or removed is three set
   elements added or deleted in one transaction, no program started;
4. one ``iptables-restore --noflush`` for filter and raw together, one
   atomic transaction holding only miniecs's chains (``mecs-``) and its jumps,
   started only when a chain or jump differs;
5. stale ipsets destroyed once nothing names them;
6. established flows that the new rules no longer allow are deleted from
   conntrack (``conntrack -D``), flow by flow, judged by the same evaluator
   ``miniecs sg explain`` uses — so exactly those flows are cut.

Reality is read back (``iptables-save -c``, ``ipset save``, the nft table) on
the first pass and at least every ``verify_interval_s``; in between the last
applied state stands for it, so a one-rule change or a NIC added costs one
small restore, not a read of every chain. The anti-spoofing table is rebuilt
(atomically, in one transaction) on the first pass of an agent and whenever
its chain is not exactly what this agent wrote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent import faults
from agent import ipset_nl
from agent import proc
from agent.errors import AgentError
from agent.firewall_model import evaluate
from agent.firewall_render import (EB_JUMPS, EB_LEGACY_TABLE, EB_TABLE, FILTER_JUMPS,
                                   RAW_JUMPS, SPOOF_TABLE, Desired, SpoofObserved, TableObserved,
                                   egress_chain, filtered_nics, ingress_chain, parse_ipset_save,
                                   parse_save, parse_spoof_json, plan_restore, plan_sets,
                                   plan_spoof, render, rule_set_key, spoof_table, widens_only)
from agent.nft import Nft
from agent.spec import AddressSetSpec, NicSpec

log = logging.getLogger(__name__)

BR_NF_SYSCTL = "net.bridge.bridge-nf-call-iptables"


class FirewallReconciler:
    def __init__(self, run: Callable[..., proc.Result] = proc.run,
                 verify_interval_s: float = 5.0, netns: str | None = None,
                 nft: Nft | None = None) -> None:
        """``run`` runs the iptables/ipset/conntrack programs; ``nft`` (or a new one in
        ``netns``, None: this process's namespace) holds the anti-spoofing table."""
        self.run = run
        self.nft = nft or Nft(netns)
        self.verify_interval_s = verify_interval_s
        self._cache: dict[str, TableObserved] | None = None
        self._sets_cache: dict[str, set[str]] | None = None
        self._spoof: SpoofObserved | None = None  # None: absent, or to be rebuilt
        self._spoof_present = True  # a table may be there (until seen or made absent)
        self._spoof_ref: tuple[list, list] | None = None  # (chains, rules) as we wrote them
        self._verified_at = 0.0
        self._nics: dict[str, tuple[str, NicSpec]] | None = None  # last applied: tap → key, NIC
        self._sets: dict[str, frozenset[str]] = {}
        self.rule_hits: dict[str, int] | None = None
        self.last_apply_s = 0.0
        self.last_steps: dict[str, float] = {}  # step → seconds, of the last sync (bench)
        self._legacy_clean = False
        self._ipset_sock = None  # NETLINK_NETFILTER socket in the namespace, for set members

    # -- observe -------------------------------------------------------------------
    def observe(self) -> tuple[dict[str, TableObserved], dict[str, set[str]],
                               SpoofObserved | None]:
        # filter and raw in one iptables-save (its output has one "*table" block each)
        saved = self.run(["iptables-save", "-c"]).stdout
        blocks = _split_tables(saved)
        tables = {
            "filter": parse_save(blocks.get("filter", "")),
            "raw": parse_save(blocks.get("raw", "")),
            # chains of earlier versions' ebtables layout: looked for until seen gone once
            "eb": TableObserved() if self._legacy_clean else
            parse_save(self.run(["ebtables-save", "-t", EB_TABLE]).stdout),
            "eb_legacy": TableObserved() if self._legacy_clean else
            parse_save(self.run(["ebtables-save", "-t", EB_LEGACY_TABLE]).stdout),
        }
        self._legacy_clean = not any(tables[k].chains or tables[k].jumps
                                     for k in ("eb", "eb_legacy"))
        sets = parse_ipset_save(self.run(["ipset", "save"]).stdout)
        spoof = parse_spoof_json(self.nft.list_json(f"table bridge {SPOOF_TABLE}"))
        self.rule_hits = tables["filter"].counters
        return tables, sets, spoof

    def forget(self) -> None:
        """Drop the cache: the next sync reads reality back first."""
        self._cache = None

    # -- the pass ------------------------------------------------------------------
    def sync(self, nics: list[NicSpec], address_sets: list[AddressSetSpec]) -> list[str]:
        """Converge the host's firewall on ``nics``; returns host-level errors."""
        errors: list[str] = []
        t0 = time.perf_counter()
        self.last_steps = {}
        try:
            desired = render(nics, address_sets)
        except ValueError as exc:  # a NIC the anti-spoofing table cannot name
            return [f"firewall: {exc}"]
        self._step("render", t0)
        now = time.monotonic()
        try:
            if self._cache is None or now - self._verified_at >= self.verify_interval_s:
                t1 = time.perf_counter()
                if desired.filter:
                    err = self._ensure_br_netfilter()
                    if err:
                        errors.append(err)
                self._cache, self._sets_cache, spoof = self.observe()
                self._spoof_present = spoof is not None
                if spoof is not None and (spoof.chains, spoof.rules) != self._spoof_ref:
                    spoof = None  # not exactly what this agent wrote: rebuilt below
                self._spoof = spoof
                self._verified_at = now
                self._step("observe", t1)
            touched = self._apply(desired, self._cache, self._sets_cache or {})
        except AgentError as exc:
            self._cache = None
            self._spoof = None
            self._spoof_present = True
            if not desired.filter and not desired.eb:
                return errors  # nothing to enforce here (e.g. no iptables where no NIC is filtered)
            return errors + [f"firewall: {exc}"]
        self._cache = {
            "filter": _as_observed(desired.filter, FILTER_JUMPS, self._cache["filter"]),
            "raw": _as_observed(desired.raw, RAW_JUMPS, self._cache["raw"]),
            "eb": TableObserved(),
            "eb_legacy": TableObserved(),
        }
        self._sets_cache = {k: set(v) for k, v in desired.sets.items()}
        try:
            t1 = time.perf_counter()
            self._cut_flows(filtered_nics(nics), desired.sets, touched)
            self._step("cut_flows", t1)
        except AgentError as exc:
            errors.append(f"firewall: cutting flows: {exc}")
        self.last_apply_s = time.perf_counter() - t0
        return errors

    def _step(self, name: str, since: float) -> None:
        self.last_steps[name] = self.last_steps.get(name, 0.0) + time.perf_counter() - since

    def _apply(self, d: Desired, obs: dict[str, TableObserved], sets: dict[str, set[str]]
               ) -> set[str]:
        """Apply the difference; returns the filter chains whose change may drop a flow."""
        t0 = time.perf_counter()
        set_payload, stale_sets = plan_sets(d.sets, sets)
        if set_payload:
            members = _member_changes(set_payload)
            if members is not None:  # members only: over netlink, no program started
                self._change_members(members)
            else:  # a set to make: the tool
                self.run(["ipset", "restore"], input_text=set_payload)
            faults.point("firewall.after_ipsets")
        self._step("ipset", t0)
        t0 = time.perf_counter()
        changed: set[str] = set()
        inputs: dict[str, list[str]] = {}
        for key, tool, jumps, table, policy in (
                ("filter", "iptables-restore", FILTER_JUMPS, "filter", "-"),
                ("raw", "iptables-restore", RAW_JUMPS, "raw", "-"),
                ("eb", "ebtables-restore", EB_JUMPS, EB_TABLE, "ACCEPT"),
                ("eb_legacy", "ebtables-restore", (), EB_LEGACY_TABLE, "ACCEPT")):
            payload, touched = plan_restore(getattr(d, key) if key != "eb_legacy" else {},
                                            obs[key], jumps, table, policy)
            if payload:
                inputs.setdefault(tool, []).append(payload)
                log.info("firewall: %s %s: %d chain(s) changed", tool, table, len(touched))
                if key == "filter":  # chains whose change may drop an established flow
                    changed = {c for c in touched if not widens_only(
                        obs[key].chains.get(c, []), d.filter.get(c, []))}
        spoof, rebuild = self._plan_spoof(d)
        self._step("plan", t0)
        if inputs or spoof:
            faults.point("firewall.before_restore")
        if spoof:
            t0 = time.perf_counter()
            self.nft.run(spoof)
            if rebuild:
                got = parse_spoof_json(self.nft.list_json(f"table bridge {SPOOF_TABLE}"))
                self._spoof_ref = (got.chains, got.rules) if got else None
            self._spoof_present = bool(d.spoof)
            self._step("nft", t0)
        if d.spoof:
            self._spoof = SpoofObserved(taps={t for t, _m, _i in d.spoof},
                                        macs={(t, m) for t, m, _i in d.spoof},
                                        addrs=set(d.spoof))
        else:
            self._spoof = None
        # filter and raw go in one iptables-restore; ebtables-restore only removes an
        # earlier version's anti-spoofing chains (once)
        for tool in ("iptables-restore", "ebtables-restore"):
            if tool in inputs:
                t0 = time.perf_counter()
                self.run([tool, "--noflush"], input_text="".join(inputs[tool]))
                self._step(tool, t0)
        if inputs or spoof:
            faults.point("firewall.after_restore")
        for name in stale_sets:
            faults.point("firewall.before_destroy_ipset")
            self.run(["ipset", "destroy", name], check=False)
        return changed

    def _change_members(self, changes: list[tuple[str, str, str]]) -> None:
        if self._ipset_sock is None:
            self._ipset_sock = self.nft.call(ipset_nl.open_socket)
        try:
            ipset_nl.change_members(self._ipset_sock, changes)
        except (OSError, AgentError) as exc:
            self._ipset_sock.close()
            self._ipset_sock = None
            raise AgentError(f"ipset members: {exc}", retryable=True) from None

    def _plan_spoof(self, d: Desired) -> tuple[str | None, bool]:
        """The nft text for the anti-spoofing table, and whether it rebuilds the table."""
        if not d.spoof:
            if self._spoof is not None or self._spoof_present:
                return f"table bridge {SPOOF_TABLE}\ndelete table bridge {SPOOF_TABLE}\n", False
            return None, False
        if self._spoof is None:
            return spoof_table(d.spoof), True
        return plan_spoof(d.spoof, self._spoof), False

    def _ensure_br_netfilter(self) -> str | None:
        """Bridged IPv4 must traverse iptables in this namespace (a per-namespace sysctl)."""
        got = self.run(["sysctl", "-n", BR_NF_SYSCTL], check=False)
        if got.returncode != 0:
            return f"firewall: br_netfilter not loaded ({got.stderr.strip()})"
        if got.stdout.strip() != "1":
            self.run(["sysctl", "-q", "-w", f"{BR_NF_SYSCTL}=1"])
            log.info("set %s = 1", BR_NF_SYSCTL)
        return None

    # -- flows ---------------------------------------------------------------------
    def _cut_flows(self, nics: list[NicSpec], sets: dict[str, frozenset[str]],
                   touched: set[str]) -> None:
        """Delete the tracked flows of changed NICs that their rules no longer allow.

        A NIC is judged again when its rule chains changed in a way that may
        drop a flow (not just accept rules added or drop rules removed), it moved
        to other chains (other groups), a set named by one of its
        accept rules lost members or a set named by one of its drop rules gained
        some; after an agent (re)start, every NIC is. (A set of an accept rule
        gaining members, or of a drop rule losing some, can only allow more, so
        a NIC joining a group — its address joins the group's set, which the
        group's members accept — costs no conntrack dump.)
        """
        before = self._nics
        now = {n.tap: (rule_set_key(n), n) for n in nics}
        empty: frozenset[str] = frozenset()
        grew = {k for k in set(sets) | set(self._sets)
                if sets.get(k, empty) - self._sets.get(k, empty)}
        shrank = {k for k in set(sets) | set(self._sets)
                  if self._sets.get(k, empty) - sets.get(k, empty)}
        self._nics, self._sets = now, dict(sets)
        if before is None:
            check = [n for _k, n in now.values()]  # nothing known: judge every flow
        else:
            # A NIC this agent filters for the first time is left out: its chains are
            # written before its domain starts (the firewall step runs first), so no flow
            # through its tap was ever admitted by rules it no longer has. That spares a
            # conntrack dump of the whole host for every NIC added.
            narrowed: dict[str, bool] = {}  # rule-set key → a set change may drop flows
            check = []
            for t, (key, n) in now.items():
                if before.get(t) is None:
                    continue
                if key not in narrowed:
                    accepts, drops = _set_roles(n)
                    narrowed[key] = bool(accepts & shrank or drops & grew)
                if before[t][0] != key or ingress_chain(key) in touched \
                        or egress_chain(key) in touched or narrowed[key]:
                    check.append(n)
        if not check:
            return
        faults.point("firewall.before_cut_flows")
        out = self.run(["conntrack", "-L"], check=False)
        if out.returncode != 0:
            if "0 flow entries" in out.stderr:
                return
            raise AgentError(out.stderr.strip() or "conntrack -L failed", retryable=True)
        members = {k: set(v) for k, v in sets.items()}
        for flow in parse_conntrack(out.stdout):
            for n in check:
                fw = n.firewall
                if fw is None or flow.get("zone", "0") != str(fw.ct_zone):
                    continue
                if flow["dst"] == n.ip:
                    direction, peer = "ingress", flow["src"]
                elif flow["src"] == n.ip:
                    direction, peer = "egress", flow["dst"]
                else:
                    continue
                port = int(flow["dport"]) if "dport" in flow else None
                sport = int(flow["sport"]) if "sport" in flow else None
                v = evaluate(fw, direction, protocol=flow["proto"], port=port, peer_ip=peer,
                             local_ip=n.ip, sets=members, source_port=sport)
                if v.policy == "drop":
                    self._delete_flow(flow, fw.ct_zone)
                    break

    def _delete_flow(self, flow: dict[str, str], zone: int) -> None:
        argv = ["conntrack", "-D", "-w", str(zone), "-p", flow["proto"], "-s", flow["src"],
                "-d", flow["dst"]]
        if "sport" in flow and "dport" in flow:
            argv += ["--sport", flow["sport"], "--dport", flow["dport"]]
        self.run(argv, check=False)
        log.info("firewall: cut %s flow %s -> %s:%s (zone %d)", flow["proto"], flow["src"],
                 flow["dst"], flow.get("dport", "-"), zone)


def _member_changes(payload: str) -> list[tuple[str, str, str]] | None:
    """The ``add``/``del`` lines of an ``ipset restore`` payload as (op, set, ip); None when
    the payload also makes a set."""
    out = []
    for line in payload.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] not in ("add", "del"):
            return None
        out.append((parts[0], parts[1], parts[2]))
    return out


def _split_tables(saved: str) -> dict[str, str]:
    """``iptables-save`` output of several tables → table name → its block."""
    blocks: dict[str, list[str]] = {}
    cur: list[str] | None = None
    for line in saved.splitlines():
        if line.startswith("*"):
            cur = blocks.setdefault(line[1:].strip(), [])
        if cur is not None:
            cur.append(line)
    return {k: "\n".join(v) + "\n" for k, v in blocks.items()}


def _set_roles(n: NicSpec) -> tuple[set[str], set[str]]:
    """The sets a NIC's accept rules name, and those its drop rules name."""
    fw = n.firewall
    rules = (*fw.ingress, *fw.egress) if fw else ()
    return ({r.peer_set for r in rules if r.peer_set and r.policy == "accept"},
            {r.peer_set for r in rules if r.peer_set and r.policy == "drop"})


def _as_observed(chains: dict[str, list[str]], jumps, prev: TableObserved) -> TableObserved:
    return TableObserved(chains={k: list(v) for k, v in chains.items()},
                         jumps={j for _c, j in jumps} if chains else set(),
                         counters=prev.counters)


def parse_conntrack(text: str) -> list[dict[str, str]]:
    """``conntrack -L`` lines → the original direction's proto, src, dst, ports and zone."""
    flows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] not in ("tcp", "udp", "icmp"):
            continue
        flow: dict[str, str] = {"proto": parts[0]}
        for p in parts[1:]:
            if "=" not in p:
                continue
            k, v = p.split("=", 1)
            if k in ("src", "dst", "sport", "dport") and k in flow:
                continue  # the reply direction repeats the keys
            if k in ("src", "dst", "sport", "dport", "zone"):
                flow[k] = v
        if "src" in flow and "dst" in flow:
            flows.append(flow)
    return flows
