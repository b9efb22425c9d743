"""``multinic doctor``: check this node's multinic installation, one line per check: OK / WARN / FAIL and the fix.

The checks follow what breaks pods in Multus installs: a conf that is not first or not valid (Multus #1155,
#1312, #1283, #1361), a missing plugin binary, a thick daemon that is down or of another version (#1165,
#1146), an expired service-account token (#852, #929, #1263, #1414), RBAC that lacks a verb, a log that
cannot be written. Read-only: the only API write is a SelfSubjectAccessReview, which changes nothing.
Exit 1 when any check FAILs.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Any

from . import common as c

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# What the node agent does in the API (packaging/manifests/rbac.yaml's ClusterRole ``multinic``; a unit test
# keeps the two equal): (verb, API group, resource[/subresource]).
NEEDED: tuple[tuple[str, str, str], ...] = (
    ("get", "", "pods"), ("list", "", "pods"), ("watch", "", "pods"),
    ("update", "", "pods/status"),
    ("get", "", "nodes"),
    ("get", "", "namespaces"),  # policyProfiles: a Namespace's multinic.io/policy label
    ("create", "", "events"),
    ("get", "k8s.cni.cncf.io", "network-attachment-definitions"),
    ("list", "k8s.cni.cncf.io", "network-attachment-definitions"),
    ("watch", "k8s.cni.cncf.io", "network-attachment-definitions"),
    ("get", "whereabouts.cni.cncf.io", "ippools"), ("list", "whereabouts.cni.cncf.io", "ippools"),
    ("create", "whereabouts.cni.cncf.io", "ippools"),
    ("patch", "whereabouts.cni.cncf.io", "ippools"),  # a pool write is a merge patch of the changed entries
    ("get", "whereabouts.cni.cncf.io", "overlappingrangeipreservations"),
    ("list", "whereabouts.cni.cncf.io", "overlappingrangeipreservations"),
    ("create", "whereabouts.cni.cncf.io", "overlappingrangeipreservations"),
    ("delete", "whereabouts.cni.cncf.io", "overlappingrangeipreservations"),
    ("delete", "whereabouts.cni.cncf.io", "ippools"), ("list", "", "nodes"),
    # node slices, persistent IPs (IPAMClaims) and the reconciler's Lease
    ("get", "whereabouts.cni.cncf.io", "nodeslicepools"), ("list", "whereabouts.cni.cncf.io", "nodeslicepools"),
    ("create", "whereabouts.cni.cncf.io", "nodeslicepools"), ("update", "whereabouts.cni.cncf.io", "nodeslicepools/status"),
    ("get", "k8s.cni.cncf.io", "ipamclaims"), ("list", "k8s.cni.cncf.io", "ipamclaims"),
    ("update", "k8s.cni.cncf.io", "ipamclaims/status"),
    ("get", "coordination.k8s.io", "leases"), ("create", "coordination.k8s.io", "leases"),
    ("update", "coordination.k8s.io", "leases"),
)
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
TOKEN_WARN_SECONDS = 3600.0  # a token this close to its expiry is only fine if something rotates it
CERT_WARN_SECONDS = 7 * 86400.0  # a client certificate is renewed by hand (or by a rotation job that may be broken)
DEFAULT_SOCKET = "/run/multinic/multinic.sock"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


# ---- the conf directory ------------------------------------------------------------------------------------------


def check_conf_dir(node: c.NodeConf) -> list[Check]:
    """multinic's conf is the one the runtime picks (the first loadable file) and its cluster network exists."""
    out = []
    first = None
    skipped = []
    for path in c.conf_files(node.conf_dir):
        try:
            doc = c.read_json(path)
        except c.AdminError:
            skipped.append(os.path.basename(path))
            continue
        if isinstance(doc.get("plugins"), list) or doc.get("type"):
            first = path
            break
    name = os.path.basename(node.path)
    if first is not None and os.path.abspath(first) != os.path.abspath(node.path):
        out.append(Check("conf first", FAIL, f"the runtime uses {os.path.basename(first)} before {name}: pods get "
                         "no multinic and no secondary networks",
                         f"rename {name} so it sorts first (e.g. 00-multinic.conflist), or remove "
                         f"{os.path.basename(first)}"))
    else:
        out.append(Check("conf first", OK, f"{node.path} is the first conf in {node.conf_dir}"))
    if skipped:
        out.append(Check("conf files", WARN, f"not valid JSON, skipped by the runtime: {', '.join(skipped)}",
                         f"fix or remove them from {node.conf_dir}"))
    out.append(check_cluster_network(node))
    return out


def check_cluster_network(node: c.NodeConf) -> Check:
    from ..delegator import context, resolve
    from ..k8s import nad as nadmod
    from ..spec.errors import CNIError
    from ..spec.request import Request

    src = None
    if node.cfg.cluster_network and not node.cfg.cluster_network.startswith("/"):
        from .inspect import pod_source

        src, _ = pod_source(node)
    ctx = context.Context(Request("STATUS"), node.cfg, src, node_name=context.node_name(node.cfg))
    try:
        name, cl = resolve.configured_cluster_network(ctx)
    except CNIError as exc:
        return Check("cluster network", FAIL, str(exc),
                     "set 'clusterNetwork' to an existing NAD, conf name or file, or 'delegates' to the cluster "
                     "network's conf (multinic install writes it from the first other conf)")
    return Check("cluster network", OK, f"{name} ({', '.join(nadmod.plugin_types(cl))}, cniVersion {cl.cni_version})")


# ---- binaries ---------------------------------------------------------------------------------------------------


def _types_used(node: c.NodeConf) -> set[str]:
    """Plugin types (IPAM included) of the cluster network and of every cached attachment."""
    from ..delegator import context, resolve
    from ..k8s import nad as nadmod
    from ..spec.errors import CNIError
    from ..spec.request import Request

    types: set[str] = set()
    try:
        _, cl = resolve.configured_cluster_network(context.Context(Request("STATUS"), node.cfg, None))
        types.update(nadmod.plugin_types(cl))
    except CNIError:
        pass
    for sb in c.sandboxes(node.cfg.cni_dir):
        for e in sb.record.entries:
            types.update(nadmod.plugin_types(e.attachment.conflist))
    return types


def check_binaries(node: c.NodeConf) -> list[Check]:
    from ..registry import NATIVE

    bin_dir = node.cfg.bin_dir
    out = []
    exe_name = str(node.raw.get("type"))
    exe = os.path.join(bin_dir, exe_name)
    if not os.path.exists(exe):
        out.append(Check("binary", FAIL, f"{exe} is missing (or a dangling link): the runtime cannot run multinic",
                         "run `multinic install` (the DaemonSet's init container) on this node"))
    elif not os.access(exe, os.X_OK):
        out.append(Check("binary", FAIL, f"{exe} is not executable", f"chmod 0755 {exe}"))
    else:
        out.append(Check("binary", OK, f"{exe} -> {os.path.realpath(exe)}"))
    missing: list[str] = []
    broken: list[str] = []
    missing_native: list[str] = []
    for t in sorted(_types_used(node) | set(NATIVE)):
        path = os.path.join(bin_dir, t)
        if os.path.lexists(path) and not os.path.exists(path):
            broken.append(t)
        elif not os.path.exists(path):
            (missing_native if t in NATIVE else missing).append(t)
    if missing or broken:
        what = []
        if missing:
            what.append(f"missing: {', '.join(missing)} (used by the cluster network or a cached attachment, "
                        "not built in: ADD and DEL of those attachments fail)")
        if broken:
            what.append(f"dangling links: {', '.join(broken)}")
        out.append(Check("plugins", FAIL, f"in {bin_dir}: " + "; ".join(what),
                         "install the missing plugins (e.g. containernetworking-plugins) into binDir; "
                         "`multinic install --plugin-links missing` restores multinic's links"))
    if missing_native:
        out.append(Check("plugin links", WARN, f"no {', '.join(missing_native)} in {bin_dir}: multinic runs them "
                         "in-process, but a runtime or plugin that execs them directly fails",
                         "`multinic install --plugin-links missing`"))
    if not missing and not broken and not missing_native:
        out.append(Check("plugins", OK, f"every plugin type in use and every native link is in {bin_dir}"))
    return out


# ---- the thick daemon -------------------------------------------------------------------------------------------


def unix_get(sock_path: str, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """One HTTP GET over the daemon's unix socket: (status, body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: multinic\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body.decode("utf-8", "replace")


def metric_label(text: str, metric: str, label: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            for kv in line[len(metric) + 1:line.index("}")].split(","):
                k, _, v = kv.partition("=")
                if k == label:
                    return v.strip('"')
    return None


def shim_version(bin_dir: str) -> str | None:
    exe = os.path.join(bin_dir, "multinic-shim")
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False,
                              stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if not k.startswith("CNI_")})
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = proc.stdout.split()
    return words[1] if proc.returncode == 0 and len(words) == 2 and words[0] == "multinic-shim" else None


def check_daemon(node: c.NodeConf, sock: str) -> list[Check]:
    from .. import __version__

    if not node.thick:
        return [Check("daemon", OK, "thin mode (conf type multinic): no daemon needed")]
    try:
        code, body = unix_get(sock, "/readyz")
    except OSError as exc:
        return [Check("daemon", FAIL, f"not reachable at {sock}: {exc.strerror or exc}; ADD fails with code 11 "
                      "(DEL falls back to thin mode)",
                      "start the thick-mode DaemonSet pod (kubectl -n kube-system get pods -l app=multinic), "
                      "or check --socket")]
    out = [Check("daemon", OK if code == 200 else FAIL, f"{sock} /readyz: HTTP {code} {body.strip()}",
                 "" if code == 200 else "the daemon is starting or stopping; check its log (kubectl logs)")]
    try:
        _, metrics = unix_get(sock, "/metrics")
    except OSError:
        metrics = ""
    daemon_v = metric_label(metrics, "multinic_build_info", "version")
    shim_v = shim_version(node.cfg.bin_dir) if node.thick else __version__
    if daemon_v is None or shim_v is None:
        out.append(Check("versions", WARN, f"cannot tell: shim {shim_v or '?'}, daemon {daemon_v or '?'} "
                         "(an older shim or daemon does not report it)",
                         "upgrade both with `multinic install` and a DaemonSet rollout"))
    elif daemon_v != shim_v:
        out.append(Check("versions", FAIL, f"shim {shim_v} but daemon {daemon_v}: the shim↔daemon protocol is only "
                         "guaranteed within one version", "roll out the DaemonSet so the daemon and "
                         f"{node.cfg.bin_dir}/multinic-shim come from the same image"))
    else:
        out.append(Check("versions", OK, f"shim and daemon both {daemon_v}"))
    return out


def check_readiness(node: c.NodeConf) -> Check:
    path = node.cfg.readiness_indicator_file
    if not path:
        return Check("readiness file", OK, "readinessindicatorfile not set: ADD does not wait for the cluster network")
    if os.path.exists(path):
        return Check("readiness file", OK, f"{path} exists")
    return Check("readiness file", FAIL, f"{path} is missing: every ADD waits {node.cfg.readiness_timeout:g}s and "
                 "fails with code 11; STATUS answers 50",
                 "start the cluster network (it writes that file), or correct readinessindicatorfile")


# ---- the API ----------------------------------------------------------------------------------------------------


def jwt_expiry(token: str) -> float | None:
    """A JWT's ``exp`` (unix seconds), or None when the token is not a JWT or has no expiry."""
    import orjson

    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


class BadCert(ValueError):
    """The bytes are not a PEM or DER X.509 certificate whose validity can be read."""


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise BadCert("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        size = first
    else:
        n = first & 0x7F
        if not 1 <= n <= 4 or pos + n > len(data):
            raise BadCert("bad length")
        size = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + size > len(data):
        raise BadCert("truncated")
    return tag, pos, pos + size


def _asn1_time(tag: int, text: bytes) -> float:
    import calendar

    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        raise BadCert("bad time") from None
    # RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ (years 50-99 are 19xx), GeneralizedTime YYYYMMDDHHMMSSZ.
    if tag == 0x17 and len(s) == 13 and s.endswith("Z") and s[:12].isdigit():
        year = int(s[:2])
        full = f"{1900 + year if year >= 50 else 2000 + year}{s[2:12]}"
    elif tag == 0x18 and len(s) == 15 and s.endswith("Z") and s[:14].isdigit():
        full = s[:14]
    else:
        raise BadCert(f"bad time {s!r}")
    try:
        return float(calendar.timegm(time.strptime(full, "%Y%m%d%H%M%S")))
    except ValueError:
        raise BadCert(f"bad time {s!r}") from None


def cert_validity(data: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) in unix seconds of the first certificate in ``data`` (PEM or DER).

    A small DER walk instead of a dependency: ``cryptography`` is not one of multinic's dependencies and the frozen
    binary should not grow by it for one field, and running ``openssl x509`` makes the doctor depend on a tool a
    minimal node image may lack. Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280 4.1)."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        body = data.split(b"-----BEGIN CERTIFICATE-----", 1)[1].split(b"-----END CERTIFICATE-----", 1)[0]
        try:
            data = base64.b64decode(b"".join(body.split()), validate=True)
        except ValueError:
            raise BadCert("bad PEM") from None
    tag, start, _ = _der(data, 0)
    if tag != 0x30:
        raise BadCert("not a certificate")
    tag, pos, tbs_end = _der(data, start)
    if tag != 0x30:
        raise BadCert("not a certificate")
    tag, _, end = _der(data, pos)
    if tag == 0xA0:  # explicit version
        pos = end
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, pos = _der(data, pos)
    tag, pos, _ = _der(data, pos)
    if tag != 0x30 or pos > tbs_end:
        raise BadCert("no validity")
    times = []
    for _field in ("notBefore", "notAfter"):
        tag, vstart, vend = _der(data, pos)
        times.append(_asn1_time(tag, data[vstart:vend]))
        pos = vend
    return times[0], times[1]


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def check_client_cert(kc: Any, now: float | None = None) -> Check | None:
    """The kubeconfig's client certificate: FAIL expired (or not yet valid, or unreadable), WARN within 7 days."""
    if kc.client_cert_data is not None:
        data, where = kc.client_cert_data, "client-certificate-data"
    elif kc.client_cert_file:
        where = f"client-certificate {kc.client_cert_file}"
        try:
            with open(kc.client_cert_file, "rb") as f:
                data = f.read()
        except OSError as exc:
            return Check("client cert", FAIL, f"{where}: cannot read it: {exc.strerror or exc}",
                         "fix the path or the file's permissions in the kubeconfig")
    else:
        return None
    fix = "issue a new client certificate and update the kubeconfig (or use a service-account token file)"
    try:
        not_before, not_after = cert_validity(data)
    except BadCert as exc:
        return Check("client cert", FAIL, f"{where}: not a readable X.509 certificate ({exc})", fix)
    now = time.time() if now is None else now
    if not_after <= now:
        return Check("client cert", FAIL, f"{where}: expired {c.age(now - not_after)} ago ({_stamp(not_after)}): "
                     "the API server refuses the TLS handshake, ADD fails with code 11", fix)
    if not_before > now:
        return Check("client cert", FAIL, f"{where}: not valid before {_stamp(not_before)} (is the clock right?)",
                     "check the node's clock (NTP), or issue a certificate valid now")
    if not_after - now < CERT_WARN_SECONDS:
        return Check("client cert", WARN, f"{where}: expires in {_left(not_after - now)} ({_stamp(not_after)})", fix)
    return Check("client cert", OK, f"{where}: expires in {_left(not_after - now)} ({_stamp(not_after)})")


def _left(seconds: float) -> str:
    return c.age(seconds) if seconds >= 0 else f"{c.age(-seconds)} ago"


def check_api(node: c.NodeConf) -> list[Check]:
    from ..k8s.errors import ApiError, ApiNotFound, ApiUnauthorized
    from ..k8s.kubeconfig import KubeConfig
    from ..spec.errors import CNIError

    cfg = node.cfg
    if cfg.manifest_dir:
        ok = os.path.isdir(cfg.manifest_dir)
        return [Check("pod source", OK if ok else FAIL, f"manifestDir {cfg.manifest_dir}" +
                      ("" if ok else " is not a directory"), "" if ok else "create it or correct manifestDir")]
    if not cfg.kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return [Check("pod source", WARN, "no kubeconfig and not in a cluster: pods get the cluster network only",
                      "set 'kubeconfig' (multinic install writes /etc/cni/net.d/multinic.d/multinic.kubeconfig)")]
    out = []
    try:
        kc = KubeConfig.load(cfg.kubeconfig or None)
        token = kc.bearer_token()
    except CNIError as exc:
        return [Check("kubeconfig", FAIL, exc.msg, "re-run `multinic install`, or fix the file's permissions")]
    where = cfg.kubeconfig or "in-cluster service account"
    out.append(Check("kubeconfig", OK, f"{where}: server {kc.server}" +
                     (f", token file {kc.token_file}" if kc.token_file else "")))
    cert = check_client_cert(kc)
    if cert is not None:
        out.append(cert)
    exp = jwt_expiry(token) if token else None
    now = time.time()
    if token is None:
        out.append(Check("token", OK, "no bearer token (client certificate)"))
    elif exp is None:
        out.append(Check("token", OK, "not a JWT with an expiry"))
    elif exp <= now:
        out.append(Check("token", FAIL, f"expired {c.age(now - exp)} ago ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))})"
                         ": every API call gets 401, ADD fails with code 11",
                         "point the kubeconfig at the projected token file (tokenFile), which kubelet rotates "
                         "(multinic install does that), or restart the DaemonSet pod"))
    elif exp - now < TOKEN_WARN_SECONDS and not kc.token_file:
        out.append(Check("token", WARN, f"expires in {_left(exp - now)} and is not read from a file that rotates",
                         "use tokenFile in the kubeconfig (multinic install does that)"))
    else:
        out.append(Check("token", OK, f"expires in {_left(exp - now)}" + (" (re-read from its file when it rotates)"
                                                                             if kc.token_file else "")))
    from ..delegator.context import node_name
    from ..k8s.client import Client

    client = Client(kc, timeout=5.0, connect_timeout=2.0)
    try:
        node_obj = node_name(cfg)
        try:
            client.get_node(node_obj)
            out.append(Check("API", OK, f"{kc.server} reachable; Node {node_obj} found"))
        except ApiNotFound:
            out.append(Check("API", WARN, f"{kc.server} reachable, but there is no Node {node_obj}: NAD node "
                             "selectors cannot match", "set 'nodeName' in the conf or NODE_NAME to this node's name"))
        except ApiUnauthorized as exc:
            if exc.status == 401:
                out.append(Check("API", FAIL, f"{kc.server} rejects the credentials (401)",
                                 "renew the token (see the token check) or re-run `multinic install`"))
                return out
            out.append(Check("API", OK, f"{kc.server} reachable (get nodes is forbidden; see RBAC)"))
        except ApiError as exc:
            out.append(Check("API", FAIL, f"{kc.server}: {exc.msg}", "check the network path to the API server"))
            return out
        out.append(check_rbac(client))
    finally:
        client.close()
    return out


def check_rbac(client: Any) -> Check:
    from ..k8s.errors import ApiError

    denied = []
    for verb, group, resource in NEEDED:
        res, _, sub = resource.partition("/")
        attrs = {"verb": verb, "group": group, "resource": res}
        if sub:
            attrs["subresource"] = sub
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs}}
        try:
            got = client.create(SSAR_PATH, body)
        except ApiError as exc:
            return Check("RBAC", FAIL, f"cannot ask the API (SelfSubjectAccessReview): {exc.msg}",
                         "the API must allow every authenticated user to create selfsubjectaccessreviews "
                         "(ClusterRole system:basic-user)")
        if not (got.get("status") or {}).get("allowed"):
            denied.append(f"{verb} {resource}" + (f".{group}" if group else ""))
    if denied:
        return Check("RBAC", FAIL, f"not allowed: {', '.join(denied)}",
                     "kubectl apply -f packaging/manifests/rbac.yaml (ClusterRole multinic, bound to the node "
                     "agent's ServiceAccount)")
    return Check("RBAC", OK, f"all {len(NEEDED)} permissions multinic needs are granted")


# ---- files ------------------------------------------------------------------------------------------------------


def check_log(node: c.NodeConf) -> Check:
    cfg = node.cfg
    o = cfg.log_options
    rot = (f"rotation: maxSize {o.max_size:g} MB, maxBackups {o.max_backups}, maxAge {o.max_age:g} d, "
           f"compress {'on' if o.compress else 'off'}")
    if not cfg.log_file:
        return Check("log file", WARN, "no logFile: failures reach only the runtime's log and pod events",
                     "set logFile (e.g. /var/log/multus.log) and logLevel error or verbose")
    path = cfg.log_file
    problem = _unwritable(path)
    if problem:
        return Check("log file", FAIL, f"{path}: {problem}: nothing is logged ({rot})",
                     "make its directory writable by root, or choose another logFile")
    if o.max_size <= 0:
        return Check("log file", WARN, f"{path} writable, but maxSize 0: never rotated, grows without bound",
                     "set logOptions.maxSize (MB)")
    return Check("log file", OK, f"{path} writable, level {cfg.log_level or 'panic'}; {rot}")


def _unwritable(path: str) -> str:
    """Why the logger could not append to ``path`` ("" when it can). root passes access(2), so try for real:
    an existing file is opened for append (nothing written); else an empty probe file is made and removed
    where the logger would create the file."""
    if os.path.exists(path):
        if not os.path.isfile(path):
            return "not a regular file"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        except OSError as exc:
            return f"cannot open for append ({exc.strerror})"
        return ""
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)  # the logger creates missing directories
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    probe = os.path.join(parent, f".multinic-doctor-probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        return f"cannot create files in {parent} ({exc.strerror})"
    return ""


def check_state_dirs(node: c.NodeConf, sock: str) -> list[Check]:
    out = []
    d = node.cfg.cni_dir
    try:
        st = os.stat(d)
    except FileNotFoundError:
        out.append(Check("cache dir", OK, f"{d} does not exist yet (made 0700 on the first ADD)"))
    except OSError as exc:
        out.append(Check("cache dir", FAIL, f"{d}: {exc.strerror}", f"check {d}"))
    else:
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            out.append(Check("cache dir", FAIL, f"{d} is {mode:04o}: others can plant records that DEL acts on",
                             f"chmod 0700 {d}"))
        elif mode & 0o077:
            out.append(Check("cache dir", WARN, f"{d} is {mode:04o}: pod identities and configs are readable by others",
                             f"chmod 0700 {d}"))
        else:
            loose = [f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))
                     and stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode) & 0o077]
            out.append(Check("cache dir", WARN if loose else OK,
                             f"{d} is {mode:04o}" + (f"; files readable by others: {', '.join(loose[:5])}" if loose else ""),
                             f"chmod 0600 {d}/*" if loose else ""))
    if node.thick:
        try:
            dmode = stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode)
            smode = stat.S_IMODE(os.stat(sock).st_mode)
        except OSError as exc:
            out.append(Check("socket", WARN, f"{sock}: {exc.strerror}", "start the daemon"))
        else:
            bad = dmode & 0o077 or smode & 0o077
            out.append(Check("socket", FAIL if bad else OK, f"{sock} {smode:04o}, directory {dmode:04o}" +
                             (": others can attach networks to any pod" if bad else ""),
                             f"chmod 0700 {os.path.dirname(sock)}; chmod 0600 {sock}" if bad else ""))
    return out


# ---- multi-tenant policy ----------------------------------------------------------------------------------------


def check_tenancy(node: c.NodeConf) -> list[Check]:
    """One WARN per setting that lets a pod or NAD author reach the node (tenancy.permissive), with the key to fix."""
    from ..delegator import tenancy

    found = tenancy.permissive(node.cfg.policies)
    if not found:
        return [Check("tenancy", OK, "pod annotations and tenant NADs are confined (no permissive setting)")]
    fix = ("narrow the key named (hostPortPolicy, allowedPaths, allowedMasters, allowedBridges, hostNetworkChanges) "
           "or the multinicPolicy entry, unless every author of pods and NADs there is trusted with root on the node "
           "(README: Security model)")
    return [Check("tenancy", WARN, line, fix) for line in found]


# ---- the command ------------------------------------------------------------------------------------------------


def run_checks(node: c.NodeConf, sock: str) -> list[Check]:
    checks: list[Check] = []
    checks += check_conf_dir(node)
    checks += check_binaries(node)
    checks += check_daemon(node, sock)
    checks.append(check_readiness(node))
    checks += check_api(node)
    checks.append(check_log(node))
    checks += check_state_dirs(node, sock)
    checks += check_tenancy(node)
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(k.name) for k in checks)
    lines = []
    for k in checks:
        line = f"{k.status:<4}  {k.name:<{width}}  {k.detail}"
        if k.fix and k.status != OK:
            line += f"\n      {'':<{width}}  fix: {k.fix}"
        lines.append(line)
    fails = sum(k.status == FAIL for k in checks)
    warns = sum(k.status == WARN for k in checks)
    lines.append(f"\n{len(checks)} checks: {fails} FAIL, {warns} WARN")
    return "\n".join(lines) + "\n"


def _main(argv: list[str], out: IO[str]) -> int:
    p = c.parser("doctor", "Check this node's multinic installation (one line per check: OK/WARN/FAIL and the fix).")
    p.add_argument("--socket", default=os.environ.get("MULTINIC_SOCKET", DEFAULT_SOCKET),
                   help=f"the thick-mode daemon's socket (default: $MULTINIC_SOCKET or {DEFAULT_SOCKET})")
    args = p.parse_args(argv)
    path = args.conf or c.DEFAULT_CONF_DIR
    if not os.path.exists(path):
        raise c.AdminError(f"--conf {path}: no such file or directory")
    try:
        node = c.load(args.conf)
    except c.AdminError as exc:
        # An install whose conf cannot be read is the first thing the doctor must report, not a usage error.
        checks = [Check("conf", FAIL, exc.msg, "fix the file (it must be JSON with a plugin of type multinic or "
                        "multinic-shim), or re-run `multinic install`")]
    else:
        checks = [Check("conf", OK, f"{node.path}: valid, type {node.raw.get('type')}")] + run_checks(node, args.socket)
    if args.output == "json":
        out.write(c.dump_json([k.to_json() for k in checks]))
    else:
        out.write(render(checks))
    return c.EXIT_PROBLEMS if any(k.status == FAIL for k in checks) else c.EXIT_OK


def main(argv: list[str]) -> int:
    return c.run("doctor", _main, argv)
