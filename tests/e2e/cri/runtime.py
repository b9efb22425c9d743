"""A private containerd 1.6 with its CRI plugin, and a CRI v1 client, for the CRI end-to-end suite and bench.

What kubelet does on a node, done here by the test: it talks ``runtime.v1.RuntimeService`` over
containerd's socket (RunPodSandbox / StopPodSandbox / RemovePodSandbox), and containerd's CRI
plugin runs the CNI config in ``conf_dir`` through go-cni/libcni (README "Running under containerd").

Rules of this module (it is a test fixture, so it must never leave anything on the shared host):
- Everything containerd keeps lives under one directory: ``root``, ``state``, the socket, the CNI
  ``bin_dir``/``conf_dir`` and, with ``netns_mounts_under_state_dir``, the pods' network namespaces —
  so other runtimes' ``cni-*`` namespaces on the host are never touched.
- ``cleanup()`` runs whatever happened: every sandbox is stopped and removed through the CRI, the
  daemon and the runc shims it started (found by their ``-address`` argument) are killed, mounts
  under the directory are unmounted, leftover netns mounts are removed, and the directory is deleted.
- The sandbox image is built offline (no registry): an OCI image layout written here from the
  static busybox, cached per session, imported with ``ctr images import``.
- The CRI stubs are compiled from tests/e2e/cri/api.proto with grpcio-tools into a temp dir at
  first use; nothing generated is committed.
"""

from __future__ import annotations

import atexit
import gzip
import hashlib
import importlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
IMAGE = "localhost/multinic-cri-pause:1"
# PID 1 of the sandbox: a shell that sleeps and exits on TERM (containerd kills the sandbox on Stop).
PAUSE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
REFERENCE_BIN = "/usr/lib/cni"
ROOT = HERE.parents[2]
SHIM_SRC = ROOT / "cni" / "daemon" / "_shim.py"  # the whole shim program in one file (shim.py is its loader)
VENV_MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")
REAL_PY = os.path.realpath(sys.executable)
K8S_NS = "k8s.io"


def missing() -> str:
    """Why the CRI suite cannot run on this machine ('' when it can)."""
    if os.geteuid() != 0:
        return "the CRI suite needs root (containerd, runc and CNI plugins)"
    for tool, pkg in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install {pkg}; make system-deps installs it)"
    if not os.path.exists("/bin/busybox"):
        return "/bin/busybox is missing (apt-get install busybox-static)"
    if not os.path.exists(f"{REFERENCE_BIN}/loopback"):
        return "the reference loopback plugin is missing (apt-get install containernetworking-plugins)"
    for mod, pkg in (("grpc", "grpcio"), ("grpc_tools", "grpcio-tools")):
        try:
            importlib.import_module(mod)
        except ImportError:
            return f"python module {mod} is missing (pip install {pkg}; it is in the test extra)"
    return ""


# ---- the CRI v1 client ----------------------------------------------------------------------------

_STUBS: tuple[ModuleType, ModuleType] | None = None
_STUBS_LOCK = threading.Lock()


def stubs() -> tuple[ModuleType, ModuleType]:
    """(api_pb2, api_pb2_grpc) compiled from api.proto into a temp dir, once per process."""
    global _STUBS
    with _STUBS_LOCK:
        if _STUBS is None:
            from grpc_tools import protoc

            out = tempfile.mkdtemp(prefix="multinic-cri-stubs-")
            atexit.register(shutil.rmtree, out, True)
            rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out}", f"--grpc_python_out={out}",
                              str(HERE / "api.proto")])
            if rc != 0:
                raise RuntimeError(f"protoc failed ({rc}) on {HERE / 'api.proto'}")
            sys.path.insert(0, out)
            try:
                _STUBS = importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")
            finally:
                sys.path.remove(out)
        return _STUBS


@dataclass(frozen=True)
class Port:
    """One CRI PortMapping: what kubelet sends for a container's ``hostPort``."""

    container_port: int
    host_port: int
    protocol: str = "TCP"
    host_ip: str = ""


class CRI:
    """The RuntimeService calls kubelet makes for a pod sandbox (a thin, typed wrapper over the stubs)."""

    def __init__(self, socket: str, timeout: float = 240.0) -> None:
        import grpc

        self.pb, grpc_mod = stubs()
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.rs = grpc_mod.RuntimeServiceStub(self.channel)
        self.timeout = timeout  # kubelet's runtime-request-timeout default (2 min) doubled: load here is high

    def close(self) -> None:
        self.channel.close()

    def version(self) -> Any:
        return self.rs.Version(self.pb.VersionRequest(version="v1"), timeout=10)

    def sandbox_config(self, name: str, namespace: str = "default", uid: str = "", attempt: int = 0,
                       ports: tuple[Port, ...] = (), annotations: dict[str, str] | None = None,
                       sysctls: dict[str, str] | None = None) -> Any:
        pb = self.pb
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid or f"uid-{name}", namespace=namespace, attempt=attempt),
            hostname=name[:63],
            port_mappings=[pb.PortMapping(protocol=getattr(pb, p.protocol), container_port=p.container_port,
                                          host_port=p.host_port, host_ip=p.host_ip) for p in ports],
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace},
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(sysctls=sysctls or {}),
        )

    def run(self, config: Any, timeout: float | None = None, handler: str = "") -> str:
        r = self.rs.RunPodSandbox(self.pb.RunPodSandboxRequest(config=config, runtime_handler=handler),
                                  timeout=timeout or self.timeout)
        return str(r.pod_sandbox_id)

    def stop(self, sandbox_id: str) -> None:
        self.rs.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)

    def remove(self, sandbox_id: str) -> None:
        self.rs.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)

    def status(self, sandbox_id: str) -> tuple[Any, dict[str, Any]]:
        """(PodSandboxStatus, the verbose ``info`` JSON: pid, runtimeSpec, cniResult …)."""
        r = self.rs.PodSandboxStatus(self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True),
                                     timeout=30)
        return r.status, json.loads(r.info.get("info", "{}") or "{}")

    def netns(self, sandbox_id: str) -> str:
        """The sandbox's network namespace path (from the OCI spec containerd built for it)."""
        _, info = self.status(sandbox_id)
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns.get("type") == "network":
                return str(ns["path"])
        raise AssertionError(f"sandbox {sandbox_id} has no network namespace in its spec")

    def list(self) -> list[Any]:
        return list(self.rs.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=30).items)


# ---- the sandbox image ----------------------------------------------------------------------------


def _blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def build_image(dest: Path, cmd: list[str] | None = None) -> Path:
    """Write an OCI image archive (image layout as a tar) with busybox-static and a sleeping PID 1.

    The layer is deterministic (fixed mtimes, sorted members), so the same image is built every time.
    """
    layer_raw = io.BytesIO()
    with tarfile.open(fileobj=layer_raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add_dir(name: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            t.addfile(ti)

        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "run"):
            add_dir(d)
        data = Path("/bin/busybox").read_bytes()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
        t.addfile(ti, io.BytesIO(data))
        for applet in ("sh", "sleep", "ip", "cat", "nc", "true"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            t.addfile(ti)
    raw = layer_raw.getvalue()
    gz = gzip.compress(raw, mtime=0)
    blobs: dict[str, bytes] = {}
    layer = _blob(blobs, gz, "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {"architecture": "amd64" if os.uname().machine == "x86_64" else os.uname().machine, "os": "linux",
              "config": {"Entrypoint": cmd or PAUSE, "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}
    cfg = _blob(blobs, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cfg, "layers": [layer]}
    man = _blob(blobs, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
    man["annotations"] = {"org.opencontainers.image.ref.name": IMAGE.rsplit(":", 1)[1],
                          "io.containerd.image.name": IMAGE}
    index = {"schemaVersion": 2, "manifests": [man]}
    with tarfile.open(dest, "w") as t:
        def put(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            t.addfile(ti, io.BytesIO(data))

        put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        put("index.json", json.dumps(index).encode())
        for digest, data in sorted(blobs.items()):
            put(f"blobs/sha256/{digest.split(':', 1)[1]}", data)
    return dest


_IMAGE_CACHE: Path | None = None


def cached_image() -> Path:
    """The sandbox image archive, built once per process (its temp dir is removed when the process exits)."""
    global _IMAGE_CACHE
    if _IMAGE_CACHE is None or not _IMAGE_CACHE.exists():
        d = Path(tempfile.mkdtemp(prefix="multinic-cri-image-"))
        atexit.register(shutil.rmtree, d, True)
        _IMAGE_CACHE = build_image(d / "pause.tar")
    return _IMAGE_CACHE


# ---- the private containerd ---------------------------------------------------------------------


def _handlers(base: Path, handlers: tuple[str, ...]) -> str:
    """Extra runtime handlers, each with its own CNI conf dir (containerd 1.6's per-runtime ``cni_conf_dir``):
    a RunPodSandbox with ``runtime_handler`` picks its network, so a bench interleaves stacks without reloads."""
    out = ['    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
           '      runtime_type = "io.containerd.runc.v2"']
    for h in handlers:
        out += [f'    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{h}]',
                '      runtime_type = "io.containerd.runc.v2"',
                f'      cni_conf_dir = "{base}/net.d-{h}"',
                '      cni_max_conf_num = 1']
    return "\n".join(out)


def _config(base: Path, handlers: tuple[str, ...] = ()) -> str:
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
oom_score = 0

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{IMAGE}"
    restrict_oom_score_adj = true
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_cdi = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
{_handlers(base, handlers)}
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{base}/cni-bin"
      conf_dir = "{base}/net.d"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "{base}/opt"
"""


@dataclass
class Containerd:
    """One private containerd. ``env`` is inherited by the CNI plugins it execs (libcni passes its own env on)."""

    base: Path
    env: dict[str, str] = field(default_factory=dict)
    handlers: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    cri: CRI | None = None
    log_path: Path = field(init=False)
    _image_imported: bool = False

    def __post_init__(self) -> None:
        for d in ("root", "state", "cni-bin", "net.d", "opt", *(f"net.d-{h}" for h in self.handlers)):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.base / "config.toml").write_text(_config(self.base, self.handlers))
        self.log_path = self.base / "containerd.log"
        lo = self.bin_dir / "loopback"
        if not lo.exists():
            lo.symlink_to(f"{REFERENCE_BIN}/loopback")

    @property
    def socket(self) -> str:
        return str(self.base / "containerd.sock")

    @property
    def bin_dir(self) -> Path:
        return self.base / "cni-bin"

    @property
    def conf_dir(self) -> Path:
        return self.base / "net.d"

    @property
    def netns_dir(self) -> Path:
        return self.base / "state" / "io.containerd.grpc.v1.cri" / "netns"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def start(self, timeout: float = 60) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.base), "TMPDIR": str(self.base / "opt"),
               **self.env}
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen(["containerd", "--config", str(self.base / "config.toml")], env=env,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            logf.close()
        self.cri = CRI(self.socket)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited ({self.proc.returncode}):\n{self.log()}")
            try:
                self.cri.version()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline:
                    raise AssertionError(f"containerd's CRI did not answer within {timeout}s:\n{self.log()}") from None
                time.sleep(0.2)
        if not self._image_imported:
            self.ctr("images", "import", "--all-platforms", str(cached_image()))
            self._image_imported = True

    def ctr(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(["ctr", "--address", self.socket, "-n", K8S_NS, *args], capture_output=True, text=True,
                           timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} → {r.returncode}: {r.stderr}")
        return r.stdout

    def _close_client(self) -> None:
        if self.cri is not None:
            self.cri.close()
            self.cri = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the daemon (sandboxes keep running in their shims, as on a node when containerd restarts)."""
        self._close_client()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def write_conf(self, doc: dict[str, Any], name: str = "10-test.conflist", handler: str = "") -> None:
        """Replace the CNI config (one file: the CRI plugin loads the first one, max_conf_num = 1)."""
        conf_dir = self.base / f"net.d-{handler}" if handler else self.conf_dir
        for f in conf_dir.iterdir():
            f.unlink()
        tmp = conf_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.rename(conf_dir / name)

    def wait_network_ready(self, timeout: float = 30) -> None:
        """The CRI plugin reloads conf_dir on an fs event; wait until a sandbox could use it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self.conf_dir.iterdir()):
                time.sleep(0.3)  # the inotify reload is asynchronous
                return
            time.sleep(0.1)

    # -- cleanup ---------------------------------------------------------------------------------

    def _our_shims(self) -> list[int]:
        pids = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and self.socket.encode() in argv:
                pids.append(int(p.name))
        return pids

    def remove_all_sandboxes(self) -> list[str]:
        """Stop and remove every sandbox through the CRI; returns the errors (a cleanup must go on)."""
        errors: list[str] = []
        if self.cri is None:
            return errors
        try:
            items = self.cri.list()
        except Exception as exc:  # noqa: BLE001
            return [f"ListPodSandbox: {exc}"]
        for sb in items:
            for call in (self.cri.stop, self.cri.remove):
                try:
                    call(sb.id)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{call.__name__} {sb.id[:12]}: {exc}")
        return errors

    def leftover_netns(self) -> list[str]:
        try:
            return sorted(p.name for p in self.netns_dir.iterdir())
        except OSError:
            return []

    def cleanup(self) -> None:
        """Remove everything this instance made (see the module rules). Never raises."""
        if self.proc is not None and self.proc.poll() is None:
            self.remove_all_sandboxes()
        self.stop(signal.SIGKILL, timeout=10)
        for pid in self._our_shims():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # runc's init processes of the sandboxes die with their shim's kill; give the kernel a moment.
        time.sleep(0.2)
        mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout.split()
        for target in sorted((m for m in mounts if m.startswith(str(self.base))), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


# ---- multinic on the node --------------------------------------------------------------------


class Daemon:
    """``multinic daemon`` on a private socket: the thick-mode node daemon."""

    def __init__(self, sock: Path, log: Path, conf_dir: Path | None = None) -> None:
        self.sock, self.log_path = sock, log
        # As on a node: the daemon reads the runtime's CNI conf dir (not the host's /etc/cni/net.d: a
        # dynamicNetworks config there would make this test daemon reconcile the host's sandboxes).
        self.args = ["--cni-conf-dir", str(conf_dir)] if conf_dir is not None else []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen([VENV_MULTINIC, "daemon", "--socket", str(self.sock), *self.args], stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"multinic daemon did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def ready(self) -> bool:
        """``GET /readyz`` on the unix socket answers 200."""
        if not self.sock.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(str(self.sock))
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: multinic\r\nConnection: close\r\n\r\n")
                head = s.recv(64)
        except OSError:
            return False
        return head.startswith(b"HTTP/1.") and head.split(b" ")[1:2] == [b"200"]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def install_multinic(bin_dir: Path, links: str = "missing") -> None:
    """The CNI bin_dir a node would have after ``multinic install``: multinic, its plugin faces, the shim.

    The shim is the plain-file shim (``python -I -S``) as the bundle ships it as its own small
    executable; multinic is the venv's console script. bandwidth is the reference binary (not native).
    """
    from packaging import install

    install.install_executable(VENV_MULTINIC, str(bin_dir))
    install.install_links(str(bin_dir), links)
    shim = bin_dir / "multinic-shim"
    if shim.exists() or shim.is_symlink():
        shim.unlink()
    shim.write_text(f"#!{REAL_PY} -IS\n" + SHIM_SRC.read_text())
    shim.chmod(0o755)
    bw = bin_dir / "bandwidth"
    if not bw.exists():
        bw.symlink_to("/usr/lib/cni/bandwidth")
