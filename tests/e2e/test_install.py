"""``multinic install`` as a node would run it: over a binary that is executing, through the real
executable, and with a kubeconfig that must keep working across token rotation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.apiserver import ApiServerDouble
from packaging import install
from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (fixture)

MULTINIC = os.path.join(os.path.dirname(sys.executable), "multinic")


def elf(tmp: Path, name: str, base: str) -> Path:
    """A real ELF executable (the kernel write-protects running ELF files: ETXTBSY)."""
    found = shutil.which(base)
    assert found, base
    p = tmp / name
    shutil.copy2(found, p)
    return p


def test_install_over_a_running_binary_never_hits_text_file_busy(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    old = elf(bin_dir, "multinic", "sleep")
    running = subprocess.Popen([str(old), "3"])
    try:
        # What a naive installer does (cp over the file) fails while the old binary runs: Multus #1221.
        with pytest.raises(OSError) as busy:
            with open(old, "r+b"):
                pass
        assert busy.value.errno == 26  # ETXTBSY
        new = elf(tmp_path, "new-multinic", "true")
        install.install_executable(str(new), str(bin_dir))
        install.install_links(str(bin_dir), "all")
        assert (bin_dir / "multinic").read_bytes() == new.read_bytes()
        assert subprocess.run([str(bin_dir / "multinic")]).returncode == 0  # the new one (true)
        assert running.poll() is None, "the old process keeps running from its (now unlinked) inode"
    finally:
        running.wait(10)
    assert running.returncode == 0
    assert sorted(p for p in os.listdir(bin_dir) if ".tmp" in p) == []


def test_the_real_executable_installs_itself_and_every_face_answers(tmp_path: Path) -> None:
    if not os.access(MULTINIC, os.X_OK):
        pytest.skip("multinic is not installed in this venv (make venv)")
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-cbr0.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "cbr0", "type": "bridge"}))
    r = subprocess.run([MULTINIC, "install", "--source", MULTINIC, "--bin-dir", str(bin_dir), "--conf-dir",
                        str(conf_dir), "--no-kubeconfig"], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    for face in ("multinic", "macvlan", "host-local", "whereabouts", "multinic-shim"):
        v = subprocess.run([str(bin_dir / face)], input=b'{"cniVersion":"1.0.0"}', capture_output=True,
                           env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}, timeout=60)
        assert v.returncode == 0 and "1.0.0" in json.loads(v.stdout)["supportedVersions"], (face, v)
    conf = json.loads((conf_dir / "00-multinic.conflist").read_text())
    assert conf["cniVersion"] == "0.4.0" and conf["plugins"][0]["delegates"][0]["name"] == "cbr0"


def test_installed_kubeconfig_follows_token_rotation(apiserver: ApiServerDouble, tmp_path: Path) -> None:  # noqa: F811
    from cni.k8s.client import Client, KubeConfig

    token = tmp_path / "projected" / "token"
    token.parent.mkdir()
    token.write_text(apiserver.token)
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-cbr0.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge"}))
    a = install.parse_args(["--skip-binary", "--conf-dir", str(conf_dir), "--kubeconfig-dir", str(tmp_path / "kc"),
                            "--api-server", apiserver.url, "--token-file", str(token),
                            "--ca-file", apiserver.ca_file])
    import io

    assert install.run(a, out=io.StringIO()) == 0
    kc = json.loads((conf_dir / "00-multinic.conflist").read_text())["plugins"][0]["kubeconfig"]
    assert apiserver.token not in Path(kc).read_text(), "the token is referenced, never copied"
    apiserver.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    client = Client(KubeConfig.from_file(kc))
    try:
        assert client.get_node("n1")["metadata"]["name"] == "n1"
        # kubelet rotates the projected token; the old one stops working (Multus #852).
        apiserver.rotate_token("rotated-token-abcdef0123")
        token.write_text("rotated-token-abcdef0123")
        assert client.get_node("n1")["metadata"]["name"] == "n1"
    finally:
        client.close()
