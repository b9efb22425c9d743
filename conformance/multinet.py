"""The ``multinet`` profile: judge a meta-plugin against the NPWG multi-network spec (v1.2/v1.3).

The lab plays the runtime and the cluster around the meta-plugin under test:
- a Kubernetes API double (``conformance/apiserver.py``, HTTPS + bearer token) listening on
  127.0.0.1 *inside* the lab's "host" namespace, where the meta-plugin runs; its kubeconfig is
  substituted for ``{{kubeconfig}}`` in the conflist under test;
- NADs and pods made per check (and removed after it), pod namespaces that are real;
- the recording delegate (``conformance/recorder.py``) installed as type ``mnc-recorder`` in a bin
  dir put first in ``CNI_PATH``: every call a delegate receives is logged with its env, stdin
  and time, so a check judges what the meta-plugin *did*, not what it says.

Placeholders in the conflist: ``{{kubeconfig}}``, ``{{clusterNetwork}}`` (a NAD in
``{{clusterNamespace}}``), ``{{confDir}}`` (on-disk delegate configs, §3.4.1), ``{{dataDir}}``,
``{{readinessFile}}``, ``{{recorder}}`` (the delegate type), ``{{globalNamespace}}`` (a namespace
whose NADs every pod may use). A meta-plugin without a readiness indicator or NAD restrictions
waives the checks that need them (``--waive ID=REASON``).
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import stat
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from .execplug import Call, Conflist, Outcome
from .lab import Lab
from .model import Fail

RECORDER = "mnc-recorder"
POD_NS = "mnc-pods"
OTHER_NS = "mnc-other"  # neither the pod's nor global: a NAD here is off limits under isolation
GLOBAL_NS = "mnc-global"
CLUSTER_NS = "kube-system"
CLUSTER_NET = "mnc-cluster"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
STATUS = "k8s.v1.cni.cncf.io/network-status"
VERSION = "1.0.0"
CAPS = {"ips": True, "mac": True, "portMappings": True, "bandwidth": True, "infinibandGUID": True}
BRIEF = 400  # characters of a plugin's output quoted in a multi-net failure message
CLONE_NEWNET = 0x40000000


def recorder(**extra: Any) -> dict[str, Any]:
    """One recording plugin's config (for a NAD's ``spec.config`` or a list's ``plugins``)."""
    return {"cniVersion": VERSION, "type": RECORDER, **extra}


def recorder_list(name: str | None, *plugins: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"cniVersion": VERSION, "plugins": [{k: v for k, v in p.items() if k != "cniVersion"} for p in plugins]}
    if name is not None:
        doc["name"] = name
    return doc


def multinic_conflist() -> dict[str, Any]:
    """multinic's node conflist for this profile (what ``--conflist`` gives for another meta-plugin)."""
    return {
        "cniVersion": VERSION,
        "name": "multinet",
        "plugins": [{
            "type": "multinic",
            "kubeconfig": "{{kubeconfig}}",
            "clusterNetwork": "{{clusterNetwork}}",
            "multusNamespace": "{{clusterNamespace}}",
            "confDir": "{{confDir}}",
            "cniDir": "{{dataDir}}/multinic",
            "readinessindicatorfile": "{{readinessFile}}",
            "readinessTimeoutSeconds": 1,
            "namespaceIsolation": True,
            "globalNamespaces": "{{globalNamespace}}",
            "allowedPluginTypes": ["{{recorder}}"],
            # §4.1.2.1 checks that annotation portMappings reach capability plugins: the lab's pods may claim
            # host ports (multinic refuses them by default; the recording delegate makes no DNAT).
            "hostPortPolicy": [{"ports": "1-65535", "protocols": ["tcp", "udp", "sctp"]}],
            "apiTimeoutSeconds": 20,
            "capabilities": {"portMappings": True, "bandwidth": True},
        }],
    }


@dataclass
class MnPod:
    netns: str  # lab name
    path: str
    namespace: str
    name: str
    uid: str
    cid: str
    ifname: str = "eth0"

    @property
    def args(self) -> str:
        return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={self.cid};K8S_POD_UID={self.uid}")


def _start_in_netns(server: Any, netns_path: str) -> None:
    """Start the API double with its listening socket in ``netns_path``: a socket belongs to the
    namespace of the thread that made it, and ``setns`` changes only the calling thread, so a
    short-lived thread enters the namespace, binds, and starts the serving thread (which inherits it)."""
    errors: list[BaseException] = []

    def enter_and_start() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns_path}")
            finally:
                os.close(fd)
            server.start()
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    t = threading.Thread(target=enter_and_start, name="apiserver-netns")
    t.start()
    t.join()
    if errors:
        raise errors[0]


class MultinetLab:
    """The lab of one multinet run (context manager): namespaces, API double, recorder, dirs."""

    def __init__(self, cni_path: list[str]) -> None:
        from .apiserver import ApiServerDouble

        self.lab = Lab()
        try:
            self.bindir = self.lab.dir("recorder")
            self.conf_dir = self.lab.dir("net.d")
            self.data_dir = self.lab.dir("data")
            self.readiness = os.path.join(self.lab.dir("run"), "cluster-ready")
            open(self.readiness, "w").close()
            wrapper = os.path.join(self.bindir, RECORDER)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorder.py")
            with open(wrapper, "w") as f:
                f.write(f'#!/bin/sh\nMNC_RECORDER_DIR={self.bindir} exec {sys.executable} {script} "$@"\n')
            os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            self.api = ApiServerDouble(self.lab.dir("apiserver"))
            _start_in_netns(self.api, self.lab.path(self.lab.host))
            self.kubeconfig = self.api.kubeconfig_path(fmt="json")  # JSON is YAML too: any client reads it
            self.cni_path = [self.bindir, *cni_path]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> MultinetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        api = getattr(self, "api", None)
        if api is not None:
            api.stop()
        self.lab.close()

    def values(self) -> dict[str, str]:
        return {"kubeconfig": self.kubeconfig, "clusterNetwork": CLUSTER_NET, "clusterNamespace": CLUSTER_NS,
                "confDir": self.conf_dir, "dataDir": self.data_dir, "readinessFile": self.readiness,
                "recorder": RECORDER, "globalNamespace": GLOBAL_NS}


@dataclass
class MnOptions:
    waive: dict[str, str] = field(default_factory=dict)


class MnCtx:
    """What a multinet check gets: make NADs and pods, run the meta-plugin, read what delegates saw."""

    def __init__(self, mlab: MultinetLab, conflist: dict[str, Any], options: MnOptions) -> None:
        from .profiles import substitute

        self.mlab = mlab
        self.lab = mlab.lab
        self.api = mlab.api
        self.options = options
        self.conflist = substitute(copy.deepcopy(conflist), mlab.values())
        self.target = Conflist(tuple(mlab.cni_path))
        self.evidence: list[dict[str, Any]] = []
        self.timings: dict[str, list[float]] = {}
        self._n = 0
        self._pods: list[MnPod] = []
        self._live: dict[str, MnPod] = {}
        self._nads: list[tuple[str, str]] = []
        self._files: list[str] = []
        self._log_offset = 0
        # whole-run leak accounting (conformance/leaks.py), as in the plugin profiles
        self.run_baseline: dict[str, Any] | None = None
        self.run_marks: list[tuple[str, dict[str, Any]]] = []
        self.cluster_nad()

    # ---- the cluster around the meta-plugin ------------------------------------------------
    def cluster_nad(self) -> None:
        """The cluster network: a recording list whose first plugin declares the kubelet capabilities
        and makes the pod's default route."""
        conf = recorder_list(CLUSTER_NET, recorder(capabilities={"portMappings": True, "bandwidth": True},
                                                   **{"conformance.defaultRoute": True}))
        self.api.seed(_nad(CLUSTER_NS, CLUSTER_NET, conf))

    def nad(self, name: str, config: dict[str, Any] | None, namespace: str = POD_NS) -> str:
        """A NAD (``config`` None: no ``spec.config``); removed after the check. Returns ``ns/name``."""
        self.api.seed(_nad(namespace, name, config))
        self._nads.append((namespace, name))
        return f"{namespace}/{name}"

    def simple_nad(self, name: str, namespace: str = POD_NS, **extra: Any) -> str:
        """A NAD whose ``spec.config`` is one recording plugin declaring every selection capability."""
        return self.nad(name, recorder_list(name, recorder(capabilities=dict(CAPS), **extra)), namespace)

    def conf_file(self, filename: str, doc: dict[str, Any]) -> None:
        path = os.path.join(self.mlab.conf_dir, filename)
        with open(path, "w") as f:
            json.dump(doc, f)
        self._files.append(path)

    def pod(self, networks: str | list[dict[str, Any]] | None = None, namespace: str = POD_NS) -> MnPod:
        self._n += 1
        ns = self.lab.pod()
        pod = MnPod(ns, self.lab.path(ns), namespace, f"pod-{self._n}", str(uuid.uuid4()),
                    f"conformance{self.lab.tag}m{self._n}")
        annotations = {}
        if networks is not None:
            annotations[NETWORKS] = networks if isinstance(networks, str) else json.dumps(networks)
        self.api.seed({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod.name, "namespace": namespace, "uid": pod.uid, "annotations": annotations},
                       "spec": {"nodeName": os.uname().nodename, "containers": [{"name": "c", "image": "pause"}]}})
        self._pods.append(pod)
        return pod

    def behave(self, networks: dict[str, dict[str, Any]]) -> None:
        """What the recorder does per network name (reset after the check)."""
        with open(os.path.join(self.mlab.bindir, "behaviour.json"), "w") as f:
            json.dump(networks, f)

    # ---- the runtime -----------------------------------------------------------------------
    def call(self, command: str, pod: MnPod, *, runtime_config: dict[str, Any] | None = None, label: str = "") -> Outcome:
        conf = copy.deepcopy(self.conflist)
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
        call = Call(command, container_id=pod.cid, netns=pod.path if pod.netns in self.lab.netns else "",
                    ifname=pod.ifname, args=pod.args, path=":".join(self.mlab.cni_path))
        out = self.target.invoke(call, conf, host_netns=self.lab.host, label=label or f"{command} {pod.namespace}/{pod.name}")
        self.timings.setdefault(command, []).append(out.duration)
        self.evidence.append(out.evidence())
        return out

    def add(self, pod: MnPod, **kw: Any) -> Outcome:
        self._live[pod.cid] = pod  # a failed ADD is DEL'd too, as a runtime does
        return self.call("ADD", pod, **kw)

    def delete(self, pod: MnPod, **kw: Any) -> Outcome:
        out = self.call("DEL", pod, **kw)
        if out.ok:
            self._live.pop(pod.cid, None)
        return out

    def require_add(self, pod: MnPod, what: str = "ADD", **kw: Any) -> Any:
        out = self.add(pod, **kw)
        if not out.ok:
            raise Fail(f"{what} failed (exit {out.exit_code}): {out.brief(BRIEF)}")
        return out.doc

    def expect_add_fails(self, pod: MnPod, what: str) -> Outcome:
        out = self.add(pod)
        if out.ok:
            raise Fail(f"{what}: ADD succeeded, the spec requires the pod's network setup to fail")
        return out

    # ---- what happened ----------------------------------------------------------------------
    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        """Delegate calls recorded since the check began (in the order they ended)."""
        path = os.path.join(self.mlab.bindir, "calls.jsonl")
        try:
            with open(path) as f:
                f.seek(self._log_offset)
                lines = f.read().splitlines()
        except OSError:
            return []
        got = [json.loads(ln) for ln in lines if ln.strip()]
        return [c for c in got if command is None or c["command"] == command]

    def show_calls(self, label: str = "delegate calls (recorder)") -> list[dict[str, Any]]:
        calls = self.calls()
        self.evidence.append({"label": label, "calls": [
            {"command": c["command"], "network": (c.get("conf") or {}).get("name"), "ifname": c["env"].get("CNI_IFNAME"),
             "containerID": c["env"].get("CNI_CONTAINERID"), "t0": round(c["t0"], 3), "t1": round(c["t1"], 3),
             "exit": c["exit"], "conf": c.get("conf")} for c in calls]})
        return calls

    def status(self, pod: MnPod) -> Any:
        obj = self.api.get_obj("pods", pod.name, pod.namespace) or {}
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(STATUS)
        self.evidence.append({"label": "network-status annotation", "stdout": raw or "(none)"})
        if raw is None:
            raise Fail(f"pod {pod.namespace}/{pod.name} has no {STATUS} annotation after ADD")
        try:
            return json.loads(raw)
        except ValueError:
            raise Fail(f"{STATUS} is not JSON: {raw[:200]!r}") from None

    @property
    def cid_prefix(self) -> str:
        return f"conformance{self.lab.tag}m"

    def whole(self) -> dict[str, Any]:
        return self.lab.whole([self.mlab.data_dir])

    def mark(self, label: str) -> None:
        if self.run_baseline is not None:
            self.run_marks.append((label, self.whole()))

    def addresses(self) -> set[str]:
        """Every address a delegate handed out in this run."""
        saved, self._log_offset = self._log_offset, 0
        try:
            return {str(ip.get("address", "")).split("/")[0] for c in self.calls("ADD")
                    for ip in (c.get("result") or {}).get("ips") or [] if isinstance(ip, dict)}
        finally:
            self._log_offset = saved

    # ---- between checks ---------------------------------------------------------------------
    def begin(self) -> None:
        path = os.path.join(self.mlab.bindir, "calls.jsonl")
        self._log_offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.evidence = []

    def cleanup(self) -> None:
        self.behave({})
        if not os.path.exists(self.mlab.readiness):
            open(self.mlab.readiness, "w").close()
        for pod in list(self._live.values()):
            self.target.invoke(Call("DEL", container_id=pod.cid, netns=pod.path if pod.netns in self.lab.netns else "",
                                    ifname=pod.ifname, args=pod.args, path=":".join(self.mlab.cni_path)),
                               copy.deepcopy(self.conflist), host_netns=self.lab.host)
        self._live.clear()
        for pod in self._pods:
            self.lab.drop(pod.netns)
            self.api.delete_obj("pods", pod.name, pod.namespace)
        self._pods.clear()
        for ns, name in self._nads:
            self.api.delete_obj("network-attachment-definitions", name, ns, api_version="k8s.cni.cncf.io/v1")
        self._nads.clear()
        for path in self._files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._files.clear()


def _nad(namespace: str, name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {} if config is None else {"config": json.dumps(config)}}


