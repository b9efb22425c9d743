"""A real container runtime driving ``multinic``: podman with its CNI backend
(``network_backend = "cni"``: https://github.com/containers/common/blob/main/docs/containers.conf.5.md).

Everything podman keeps (storage, run state, events, tmp), the CNI configs, the installed
executable, multinic's cache, IPAM stores and manifests live under one scratch directory; the
image is a busybox-static rootfs imported locally (no registry). Cleanup runs whatever happens:
containers, pods, images, the bridges and the macvlan master this module made, the scratch dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

IMAGE = "localhost/multinic-e2e-busybox:latest"
APPLETS = ("sh", "ip", "ls", "cat", "sleep", "ping", "ifconfig", "grep", "echo", "true", "sysctl")


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("podman e2e needs root (CNI plugins create links in other namespaces)")
    for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("busybox", "busybox-static")):
        if shutil.which(tool) is None and not os.path.exists(f"/bin/{tool}"):
            pytest.skip(f"{tool} is missing (apt-get install {pkg}; make system-deps installs it)")


def _executable(bin_dir: Path) -> str:
    """Install multinic into ``bin_dir``: the PyInstaller bundle if it can be built here, else the venv script."""
    from packaging import install, pyi_build

    source = ""
    try:
        built = pyi_build.cached_build(False)
        source = str(built.parent) if built else ""
    except Exception as exc:  # noqa: BLE001 - test_binary.py reports a broken build; run with the script
        sys.stderr.write(f"podman e2e: PyInstaller build failed ({exc}); using the venv script\n")
    if not source:
        source = os.path.join(os.path.dirname(sys.executable), "multinic")
    install.install_executable(source, str(bin_dir))
    install.install_links(str(bin_dir), "all")
    return "bundle" if source != os.path.join(os.path.dirname(sys.executable), "multinic") else "venv script"


@dataclass
class Podman:
    scratch: Path
    tag: str
    env: dict[str, str]
    flavour: str = ""
    links: list[str] = field(default_factory=list)

    @property
    def manifests(self) -> Path:
        return self.scratch / "manifests"

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}\n"
                                 f"--- multinic log ---\n{self.log()[-3000:]}")
        return r

    def log(self) -> str:
        p = self.scratch / "multus.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def exec(self, ctr: str, *cmd: str, check: bool = True) -> str:
        return self.run("exec", ctr, *cmd, check=check).stdout

    def pod_manifest(self, name: str, networks: str) -> None:
        doc = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "uid": f"uid-{name}",
                            "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
               "spec": {"containers": [{"name": "c", "image": IMAGE}]}}
        (self.manifests / f"pod-{name}.yaml").write_text(yaml.safe_dump(doc))

    def nad(self, name: str, config: dict[str, Any]) -> None:
        doc = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": "default"}, "spec": {"config": json.dumps(config)}}
        (self.manifests / f"nad-{name}.yaml").write_text(yaml.safe_dump(doc))

    def network(self, name: str, conflist: dict[str, Any]) -> None:
        (self.scratch / "net.d" / f"{name}.conflist").write_text(json.dumps(conflist, indent=1))


def _write_configs(scratch: Path) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1048576 if hard == resource.RLIM_INFINITY else hard
    (scratch / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{scratch}/storage"\nrunroot = "{scratch}/run"\n')
    (scratch / "containers.conf").write_text(f"""[containers]
default_ulimits = ["nofile={hard}:{hard}", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{scratch}/bin", "/usr/lib/cni"]
network_config_dir = "{scratch}/net.d"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{scratch}/events.log"
tmp_dir = "{scratch}/tmp"
""")


def _image(p: Podman) -> None:
    root = p.scratch / "rootfs"
    (root / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, root / "bin" / "busybox")
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "etc", "tmp", "run"):
        (root / d).mkdir()
    (root / "pause").write_text("#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 1; done\n")
    (root / "pause").chmod(0o755)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    r = subprocess.run(["podman", "import", "--change", 'CMD ["/bin/sh"]', "-", IMAGE], stdin=tar.stdout,
                       env=p.env, capture_output=True, text=True, timeout=120)
    tar.wait()
    assert r.returncode == 0, r.stderr


def _cleanup(p: Podman) -> None:
    for args in (["pod", "rm", "-af", "-t", "0"], ["rm", "-af", "-t", "0"], ["rmi", "-af"]):
        subprocess.run(["podman", *args], env=p.env, capture_output=True, timeout=120)
    for link in p.links:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    for line in subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout.split():
        if line.startswith(str(p.scratch)):
            subprocess.run(["umount", "-l", line], capture_output=True)
    shutil.rmtree(p.scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    _need()
    tag = uuid.uuid4().hex[:5]
    scratch = Path(tmp_path_factory.mktemp(f"podman-{tag}"))
    for d in ("bin", "net.d", "manifests", "tmp", "cache"):
        (scratch / d).mkdir()
    _write_configs(scratch)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(scratch),
           "CONTAINERS_CONF": str(scratch / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(scratch / "storage.conf"), "TMPDIR": str(scratch / "tmp")}
    p = Podman(scratch, tag, env)
    try:
        p.flavour = _executable(scratch / "bin")
        _image(p)
        yield p
    finally:
        _cleanup(p)
