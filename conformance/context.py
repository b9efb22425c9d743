"""What a check works with: the run's options, a pod, and the context ``Ctx`` (plugin, lab, calls, state).

Its own module so that the checks, the runner and the report model import it and each other one
way only (checks → context → model; runner → checks, context): no cycle.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from . import profiles
from .execplug import Call, Conflist, Outcome, Plugin
from .lab import Lab
from .model import Fail, Skip


def vkey(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


@dataclass
class Options:
    runs: int = 5  # ADD/CHECK/DEL cycles for the latency check
    parallel: int = 8  # concurrent ADDs for the IPAM uniqueness check
    latency_budget_ms: float = 2000.0  # p95 of ADD above this is a (SHOULD) failure
    ipam_type: str = "host-local"
    #: check id → why it cannot apply to this plugin (the caller's declaration, shown as the skip
    #: reason), for what the harness cannot detect, e.g. a cluster-wide IPAM whose GC must not act
    #: on one runtime's attachment list.
    waive: dict[str, str] = field(default_factory=dict)


@dataclass
class Pod:
    ns: str
    path: str
    ifname: str
    prev: dict[str, Any] | None = None  # chained: what the earlier plugin "returned" (1.0.0 shape)
    exempt: set[str] = field(default_factory=set)  # host-side links made for this pod


class Ctx:
    """What a check function gets: the plugin, the lab, and helpers that record evidence."""

    def __init__(
        self,
        target: Plugin | Conflist,
        profile: str,
        lab: Lab,
        template: dict[str, Any],
        versions: list[str],
        cni_path: str,
        state_dirs: list[str],
        options: Options,
        kernel: str = "host",
    ) -> None:
        self.target = target
        self.kernel = kernel  # "uml" when the whole run is inside User-Mode Linux
        self.profile = profile
        self.lab = lab
        self.template = template
        self.versions = versions
        self.supported: list[str] = list(versions)
        self.version_evidence: list[dict[str, Any]] = []  # the VERSION call that set ``supported``
        self.cni_path = cni_path
        self.data_dir = lab.dir("data")
        self.state_dirs = [*state_dirs, self.data_dir]
        self.options = options
        self.evidence: list[dict[str, Any]] = []
        self.timings: dict[str, list[float]] = {}
        self._cids = itertools.count(1)
        self._pods: list[Pod] = []
        self._live: dict[str, tuple[Pod, str, Any]] = {}  # cid -> what a DEL needs
        # Whole-run leak accounting (conformance/leaks.py): the baseline before the run's first
        # call, one snapshot after each check, and what the results said the plugin may keep.
        self.run_baseline: dict[str, Any] | None = None
        self.run_marks: list[tuple[str, dict[str, Any]]] = []
        self.host_ifaces: set[str] = set()  # host-side interfaces named by ADD results (no sandbox)
        self.addresses: set[str] = set()  # every address an ADD result handed out

    # ---- versions -------------------------------------------------------------------------
    def usable(self) -> list[str]:
        """Requested versions the plugin says it supports (sorted)."""
        return sorted((v for v in self.versions if v in self.supported), key=vkey)

    def primary(self, floor: str | None = None) -> str:
        cands = [v for v in self.usable() if floor is None or vkey(v) >= vkey(floor)]
        if not cands:
            want = f"≥ {floor}" if floor else "any"
            raise Skip(f"no requested version {want} is supported by the plugin (supports {self.supported})")
        return cands[-1]

    # ---- lab ------------------------------------------------------------------------------
    def cid(self) -> str:
        return f"conformance{self.lab.tag}c{next(self._cids)}"

    @property
    def cid_prefix(self) -> str:
        """What every container ID of this run starts with (a leftover naming one is per-attachment)."""
        return f"conformance{self.lab.tag}c"

    def pod(self) -> Pod:
        ns = self.lab.pod()
        path = self.lab.path(ns)
        if self.profile == "chained":
            k = len(self._pods) + 1
            cidr, gw = f"10.77.{k % 250}.2/24", f"10.77.{k % 250}.1"
            host_end, mac = self.lab.pod_veth(ns, "eth0", cidr, gw)
            pod = Pod(ns, path, "eth0", {"ifname": "eth0", "mac": mac, "sandbox": path, "cidr": cidr, "gw": gw}, {host_end})
        else:
            pod = Pod(ns, path, "eth0" if self.profile == "ipam" else "net1")
        self._pods.append(pod)
        return pod

    def finish_pods(self) -> None:
        for pod in self._pods:
            self.lab.drop(pod.ns)
        self._pods.clear()

    # ---- configs --------------------------------------------------------------------------
    def conf(self, version: str, pod: Pod | None = None, base: dict[str, Any] | None = None) -> dict[str, Any]:
        conf = profiles.substitute(
            copy.deepcopy(base if base is not None else self.template),
            {"master": self.lab.uplink, "bridge": self.lab.bridge, "dataDir": self.data_dir},
        )
        conf["cniVersion"] = version
        if self.profile == "chained" and pod is not None and pod.prev is not None:
            conf["prevResult"] = self.generated_prev(version, pod)
        return conf

    def generated_prev(self, version: str, pod: Pod) -> dict[str, Any]:
        assert pod.prev is not None
        p = pod.prev
        return profiles.prev_result(version, ifname=p["ifname"], mac=p["mac"], sandbox=p["sandbox"], cidr=p["cidr"], gw=p["gw"])

    # ---- calls ----------------------------------------------------------------------------
    def call(
        self,
        command: str,
        conf: dict[str, Any] | bytes,
        pod: Pod | None = None,
        *,
        cid: str = "",
        args: str = "",
        netns: str | None = None,
        omit: tuple[str, ...] = (),
        label: str = "",
    ) -> Outcome:
        call = Call(
            command,
            container_id=cid,
            netns=(pod.path if pod else "") if netns is None else netns,
            ifname=pod.ifname if pod else "",
            args=args,
            path=self.cni_path,
            omit=omit,
        )
        out = self.target.invoke(call, conf, host_netns=self.lab.host, label=label or command)
        self.timings.setdefault(command, []).append(out.duration)
        self.evidence.append(out.evidence())
        return out

    def add(self, pod: Pod, version: str, cid: str, conf: dict[str, Any] | None = None, **kw: Any) -> Outcome:
        out = self.call("ADD", conf if conf is not None else self.conf(version, pod), pod, cid=cid, **kw)
        if out.ok:
            self._live[cid] = (pod, version, out.doc)
            self._note_result(out.doc)
        return out

    def _note_result(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        for itf in doc.get("interfaces") or []:
            if isinstance(itf, dict) and not itf.get("sandbox") and itf.get("name"):
                self.host_ifaces.add(str(itf["name"]))
        for ip in doc.get("ips") or []:
            if isinstance(ip, dict) and isinstance(ip.get("address"), str):
                self.addresses.add(ip["address"].split("/")[0])

    def with_prev(self, conf: dict[str, Any], result: Any) -> dict[str, Any]:
        conf = dict(conf)
        if result is not None:
            conf["prevResult"] = result
        else:
            conf.pop("prevResult", None)
        return conf

    def delete(
        self,
        pod: Pod,
        version: str,
        cid: str,
        result: Any = None,
        conf: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Outcome:
        """DEL as libcni sends it: prevResult (the ADD result) only for ≥ 0.4.0 and when known."""
        conf = conf if conf is not None else self.conf(version, pod)
        conf = self.with_prev(conf, result if vkey(version) >= (0, 4, 0) else None)
        out = self.call("DEL", conf, pod, cid=cid, **kw)
        if out.ok:
            self._live.pop(cid, None)
        return out

    def cleanup(self) -> None:
        """DEL (quietly, no evidence) whatever a check added and did not delete, then drop its pods."""
        for cid, (pod, version, result) in list(self._live.items()):
            conf = self.with_prev(self.conf(version, pod), result if vkey(version) >= (0, 4, 0) else None)
            call = Call("DEL", container_id=cid, netns=pod.path if pod.ns in self.lab.netns else "",
                        ifname=pod.ifname, path=self.cni_path)
            self.target.invoke(call, conf, host_netns=self.lab.host)
        self._live.clear()
        self.finish_pods()

    def require_add(self, out: Outcome, what: str = "ADD") -> Any:
        if not out.ok or out.doc is None:
            raise Fail(f"{what} failed (exit {out.exit_code}): {out.brief()}")
        return out.doc

    # ---- state ----------------------------------------------------------------------------
    def whole(self) -> dict[str, Any]:
        return self.lab.whole(self.state_dirs)

    def mark(self, label: str) -> None:
        """Snapshot after ``label`` (a check id, or the warm-up) when the run keeps a baseline."""
        if self.run_baseline is not None:
            self.run_marks.append((label, self.whole()))

    def snapshot(self, *pods: Pod) -> dict[str, Any]:
        return self.lab.snapshot([p.ns for p in pods], self.state_dirs)

    def diff(self, before: dict[str, Any], after: dict[str, Any], *, exempt: set[str] = frozenset(),  # type: ignore[assignment]
             exempt_categories: set[str] = frozenset(), label: str = "state diff") -> dict[str, Any]:  # type: ignore[assignment]
        from .lab import diff

        d = diff(before, after, exempt=exempt, exempt_categories=exempt_categories)
        self.evidence.append({"label": label, "state_diff": d})
        return d


