"""A small, *correct* NPWG meta-plugin (stdlib + iproute2 only) that the multinet broken samples break one rule at a time.

It reads the pod and its NADs from the API named by ``kubeconfig`` (JSON; token + CA), attaches the
cluster network (``clusterNetwork`` in ``multusNamespace``) as ``CNI_IFNAME`` and then every network
of the pod's ``k8s.v1.cni.cncf.io/networks`` annotation, one at a time, exec'ing the delegates from
``CNI_PATH`` as libcni would; it caches what it did in ``cniDir`` for DEL and writes network-status.
Each broken sample calls ``main(flaw)``; ``flaw=None`` is the control that must pass every multinet
check. Standalone on purpose: the harness drives it black-box like anyone's meta-plugin.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import urllib.parse
from typing import Any

NETWORKS = "k8s.v1.cni.cncf.io/networks"
STATUS = "k8s.v1.cni.cncf.io/network-status"
CAP_KEYS = {"ips": "ips", "mac": "mac", "portMappings": "portMappings", "bandwidth": "bandwidth",
            "infiniband-guid": "infinibandGUID"}


class CNIError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class Api:
    def __init__(self, kubeconfig: str) -> None:
        with open(kubeconfig) as f:
            kc = json.load(f)
        cluster = kc["clusters"][0]["cluster"]
        self.url = urllib.parse.urlsplit(cluster["server"])
        self.token = kc["users"][0]["user"]["token"]
        self.tls = ssl.create_default_context(cafile=cluster["certificate-authority"])

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        conn = http.client.HTTPSConnection(self.url.hostname or "", self.url.port, context=self.tls, timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Authorization": f"Bearer {self.token}", "Content-Type": ctype})
            resp = conn.getresponse()
            doc = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status >= 300:
            raise CNIError(11, f"API {method} {path}: {resp.status} {doc.get('message', '')}")
        return doc


def nad_config(api: Api, ns: str, name: str, conf_dir: str, flaw: str | None) -> dict[str, Any]:
    obj = api.request("GET", f"/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}")
    if obj is None:
        raise CNIError(7, f"NAD {ns}/{name} not found")
    raw = (obj.get("spec") or {}).get("config")
    if raw:
        doc: dict[str, Any] = json.loads(raw)
        if not doc.get("name") and flaw != "no-name-injection":
            doc["name"] = name
        return doc
    files = sorted(os.listdir(conf_dir)) if os.path.isdir(conf_dir) else []
    if flaw != "conf-before-conflist":
        files = sorted(files, key=lambda fn: not fn.endswith(".conflist"))
    for fn in files:
        with open(os.path.join(conf_dir, fn)) as f:
            doc = json.load(f)
        if doc.get("name") == name:
            return doc
    raise CNIError(7, f"NAD {ns}/{name}: no spec.config and no file in {conf_dir}")


def plugins_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["plugins"]) if isinstance(doc.get("plugins"), list) else [doc]


def find(ptype: str) -> str:
    for d in os.environ.get("CNI_PATH", "").split(":"):
        if d and os.access(os.path.join(d, ptype), os.X_OK):
            return os.path.join(d, ptype)
    raise CNIError(7, f"plugin {ptype} not found in CNI_PATH")


def exec_list(att: dict[str, Any], cmd: str, flaw: str | None) -> Any:
    """Run one attachment's plugins as libcni does (DEL in reverse, with the cached result)."""
    doc = att["conf"]
    plugins = plugins_of(doc)
    order = list(reversed(plugins)) if cmd == "DEL" else plugins
    prev = att.get("result") if cmd == "DEL" else None
    for p in order:
        conf = {**p, "name": doc.get("name", ""), "cniVersion": doc.get("cniVersion", "1.0.0")}
        caps = conf.pop("capabilities", None) or {}
        rc = {k: v for k, v in att["rc"].items() if caps.get(k) or flaw == "caps-to-all"}
        if rc:
            conf["runtimeConfig"] = rc
        if att.get("cni_args"):
            args = dict(conf.get("args") or {})
            args["cni"] = {**(args.get("cni") or {}), **att["cni_args"]}
            conf["args"] = args
        if prev is not None:
            conf["prevResult"] = prev
        env = {**os.environ, "CNI_COMMAND": cmd, "CNI_IFNAME": att["ifname"]}
        proc = subprocess.run([find(str(p.get("type")))], input=json.dumps(conf).encode(), env=env, capture_output=True, check=False)
        if proc.returncode != 0:
            raise CNIError(11, f"{att['name']}: {cmd} failed: {proc.stdout.decode(errors='replace')[:300]}")
        if cmd == "ADD":
            prev = json.loads(proc.stdout)
    return prev


def parse_networks(value: str, flaw: str | None) -> list[dict[str, Any]]:
    value = value.strip()
    if not value:
        return []
    if value.startswith("["):
        if flaw == "json-form-ignored":
            return []
        try:
            items = json.loads(value)
        except ValueError:
            raise CNIError(7, "network annotation is not valid JSON") from None
        for it in items:
            if not isinstance(it, dict) or not it.get("name"):
                raise CNIError(7, f"network annotation item {it} has no name")
            for ip in it.get("ips") or []:
                if not all(c in "0123456789abcdef.:/" for c in str(ip).lower()) or not any(c.isdigit() for c in str(ip)):
                    raise CNIError(7, f"network annotation: {ip!r} is not an IP address")
        return list(items)
    if flaw == "comma-form-ignored":
        return []
    out = []
    for item in value.split(","):
        item = item.strip()
        ns, _, name = item.rpartition("/")
        name, _, ifname = name.partition("@")
        out.append({"name": name, **({"namespace": ns} if ns else {}), **({"interface": ifname} if ifname else {})})
    return out


def build(conf: dict[str, Any], env: dict[str, str], args: dict[str, str], api: Api, flaw: str | None) -> list[dict[str, Any]]:
    pod = api.request("GET", f"/api/v1/namespaces/{args['K8S_POD_NAMESPACE']}/pods/{args['K8S_POD_NAME']}")
    if pod is None:
        raise CNIError(11, "pod not found")
    podns = args["K8S_POD_NAMESPACE"]
    cns, cnet = conf.get("multusNamespace", "kube-system"), conf["clusterNetwork"]
    kubelet_rc = conf.get("runtimeConfig") or {}
    atts = [{"name": f"{cns}/{cnet}", "conf": nad_config(api, cns, cnet, conf.get("confDir", ""), flaw),
             "ifname": env["CNI_IFNAME"], "rc": dict(kubelet_rc), "default": True}]
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(NETWORKS, "")
    try:
        sels = parse_networks(value, flaw)
    except CNIError:
        if flaw != "ignores-invalid-annotation":
            raise
        sels = []
    allowed = {podns, *[g.strip() for g in str(conf.get("globalNamespaces", "")).split(",") if g.strip()]}
    used = {env["CNI_IFNAME"]}
    seen = set()
    for i, sel in enumerate(sels, 1):
        ns = sel.get("namespace") or podns
        if conf.get("namespaceIsolation") and ns not in allowed and flaw != "no-isolation":
            raise CNIError(7, f"namespace isolation: pod in {podns} refers to {ns}")
        if flaw == "dedups-networks" and (ns, sel["name"]) in seen:
            continue
        seen.add((ns, sel["name"]))
        ifname = f"net{i}" if flaw == "ignores-interface" else sel.get("interface") or f"net{i}"
        if ifname in used and flaw != "allows-duplicate-ifname":
            raise CNIError(7, f"interface {ifname} requested twice")
        used.add(ifname)
        rc = {CAP_KEYS[k]: sel[k] for k in CAP_KEYS if k in sel}
        if flaw == "kubelet-rc-everywhere":
            rc = {**kubelet_rc, **rc}
        atts.append({"name": f"{ns}/{sel['name']}", "conf": nad_config(api, ns, sel["name"], conf.get("confDir", ""), flaw),
                     "ifname": ifname, "rc": rc, "cni_args": None if flaw == "ignores-cni-args" else sel.get("cni-args"),
                     "default_route": sel.get("default-route"), "default": False})
    if sum(1 for a in atts if a.get("default_route")) > 1 and flaw != "default-route-ignored":
        raise CNIError(7, "default-route requested by more than one network")
    if flaw == "cluster-last":
        atts = atts[1:] + atts[:1]
    return atts


def ip(netns: str, *argv: str) -> None:
    subprocess.run(["nsenter", f"--net={netns}", "ip", *argv], capture_output=True, check=False)


def status_entries(atts: list[dict[str, Any]], flaw: str | None) -> list[dict[str, Any]]:
    out = []
    for a in atts:
        res = a.get("result") or {}
        ifaces = res.get("interfaces") or []
        idx = 0 if flaw == "status-host-iface" else next((i for i, x in enumerate(ifaces) if x.get("sandbox")), -1)
        itf = ifaces[idx] if 0 <= idx < len(ifaces) else {}
        e: dict[str, Any] = {"name": a["name"], "interface": itf.get("name", a["ifname"]),
                             "ips": [x["address"].split("/")[0] for x in res.get("ips") or [] if x.get("interface") in (None, idx)],
                             "mac": itf.get("mac", ""), "dns": res.get("dns") or {}}
        if a["default"]:
            e["default"] = True
        if flaw == "bad-device-info" and not a["default"]:
            e["device-info"] = {"type": "pci"}
        out.append(e)
    return out


def add(conf: dict[str, Any], env: dict[str, str], args: dict[str, str], flaw: str | None) -> Any:
    ready = conf.get("readinessindicatorfile")
    if ready and not os.path.exists(ready) and flaw != "ignores-readiness":
        raise CNIError(11, f"readiness indicator {ready} missing")
    api = Api(conf["kubeconfig"])
    atts = build(conf, env, args, api, flaw)
    cache = os.path.join(conf["cniDir"], env["CNI_CONTAINERID"])
    os.makedirs(conf["cniDir"], exist_ok=True)

    def save() -> None:
        with open(cache, "w") as f:
            json.dump(atts, f)

    save()
    if flaw == "parallel":
        errs: list[CNIError] = []

        def one(a: dict[str, Any]) -> None:
            try:
                a["result"] = exec_list(a, "ADD", flaw)
            except CNIError as exc:
                errs.append(exc)

        threads = [threading.Thread(target=one, args=(a,)) for a in atts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        save()
        if errs:
            raise errs[0]
    else:
        done: list[dict[str, Any]] = []
        failure: CNIError | None = None
        for a in atts:
            try:
                a["result"] = exec_list(a, "ADD", flaw)
                done.append(a)
                save()
            except CNIError as exc:
                if flaw == "continues-after-failure":
                    failure = failure or exc
                    continue
                if flaw != "no-rollback":
                    for d in reversed(done):
                        try:
                            exec_list(d, "DEL", flaw)
                        except CNIError:
                            pass
                    os.unlink(cache)
                raise
        if failure:
            raise failure
    for a in atts:
        if a.get("default_route") and flaw != "default-route-ignored":
            netns = env["CNI_NETNS"]
            if flaw == "keeps-cluster-default":  # a second default route beside the cluster network's
                ip(netns, "route", "add", "default", "via", a["default_route"][0], "dev", a["ifname"], "metric", "50")
                continue
            ip(netns, "route", "del", "default")
            ip(netns, "route", "replace", "default", "via", a["default_route"][0], "dev", a["ifname"])
    pod = f"/api/v1/namespaces/{args['K8S_POD_NAMESPACE']}/pods/{args['K8S_POD_NAME']}/status"
    api.request("PATCH", pod, {"metadata": {"annotations": {STATUS: json.dumps(status_entries(atts, flaw))}}},
                "application/merge-patch+json")
    cluster = next(a for a in atts if a["default"])
    return {**cluster["result"], "cniVersion": conf.get("cniVersion", "1.0.0")}


def delete(conf: dict[str, Any], env: dict[str, str], flaw: str | None) -> None:
    cache = os.path.join(conf["cniDir"], env["CNI_CONTAINERID"])
    try:
        with open(cache) as f:
            atts = json.load(f)
    except OSError:
        return
    errors = []
    for a in reversed(atts):
        try:
            exec_list(a, "DEL", flaw)
        except CNIError as exc:
            if flaw == "del-stops-early":
                raise
            errors.append(exc.msg)
    if errors:
        raise CNIError(11, "; ".join(errors))
    if flaw != "keeps-cache":
        os.unlink(cache)


def main(flaw: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
    cmd = env.get("CNI_COMMAND", "")
    version = "1.0.0"
    try:
        conf = json.loads(sys.stdin.buffer.read() or b"{}")
        version = str(conf.get("cniVersion", version))
        args = dict(kv.split("=", 1) for kv in env.get("CNI_ARGS", "").split(";") if "=" in kv)
        out: Any = None
        if cmd == "VERSION":
            out = {"cniVersion": version, "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
        elif cmd == "ADD":
            out = add(conf, env, args, flaw)
        elif cmd == "DEL":
            delete(conf, env, flaw)
        if out is not None:
            sys.stdout.write(json.dumps(out))
        return 0
    except CNIError as exc:
        sys.stdout.write(json.dumps({"cniVersion": version, "code": exc.code, "msg": exc.msg}))
        return 1
