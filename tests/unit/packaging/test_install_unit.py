"""``multinic install`` in temporary directories: executable + links, CNI config, kubeconfig."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from packaging import install

PRIMARY = {"cniVersion": "1.0.0", "name": "cbr0",
           "plugins": [{"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}},
                       {"type": "portmap", "capabilities": {"portMappings": True}}]}


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("bin", "net.d", "kc", "src")}
    for p in d.values():
        p.mkdir()
    (d["net.d"] / "10-cbr0.conflist").write_text(json.dumps(PRIMARY))
    return d


def fake_bundle(root: Path, tag: str) -> Path:
    b = root / f"bundle-{tag}"
    (b / "_internal").mkdir(parents=True)
    for name in ("multinic", "multinic-shim"):
        (b / name).write_text(f"#!/bin/sh\necho {name}-{tag}\n")
        (b / name).chmod(0o755)
    (b / "_internal" / "lib.so").write_text(tag)
    return b


def args(node: dict[str, Path], *extra: str) -> list[str]:
    return ["--bin-dir", str(node["bin"]), "--conf-dir", str(node["net.d"]), "--kubeconfig-dir", str(node["kc"]),
            *extra]


def run(argv: list[str]) -> str:
    out = io.StringIO()
    assert install.run(install.parse_args(argv), out=out) == 0
    return out.getvalue()


def test_single_file_source_is_copied_with_all_plugin_links(node: dict[str, Path]) -> None:
    src = node["src"] / "multinic"
    src.write_text("#!/bin/sh\necho v1\n")
    src.chmod(0o755)
    run(args(node, "--source", str(src), "--no-kubeconfig"))
    exe = node["bin"] / "multinic"
    assert exe.read_text() == src.read_text() and stat.S_IMODE(exe.stat().st_mode) == 0o755
    for name in (*install.PLUGIN_NAMES, "multinic-shim"):
        assert os.readlink(node["bin"] / name) == "multinic", name
    assert not [p for p in os.listdir(node["bin"]) if ".tmp" in p]


def test_bundle_is_installed_in_a_versioned_dir_and_swapped_by_symlink(node: dict[str, Path]) -> None:
    v1, v2, v3 = (fake_bundle(node["src"], t) for t in ("v1", "v2", "v3"))
    run(args(node, "--source", str(v1), "--no-kubeconfig"))
    first = os.readlink(node["bin"] / "multinic")
    assert first.startswith(".multinic/") and (node["bin"] / first).read_text().endswith("multinic-v1\n")
    assert os.readlink(node["bin"] / "multinic-shim").endswith("/multinic-shim")  # the bundle's own shim
    assert os.readlink(node["bin"] / "macvlan") == "multinic"
    # Same bundle again: nothing copied, nothing changes.
    assert "already present" in run(args(node, "--source", str(v1), "--no-kubeconfig", "--skip-config"))
    run(args(node, "--source", str(v2), "--no-kubeconfig", "--skip-config"))
    second = os.readlink(node["bin"] / "multinic")
    assert second != first and (node["bin"] / first).exists(), "the previous bundle is kept for running calls"
    run(args(node, "--source", str(v3), "--no-kubeconfig", "--skip-config"))
    kept = sorted(os.listdir(node["bin"] / ".multinic"))
    assert len(kept) == 2 and first.split("/")[1] not in kept, "bundles older than the previous one are pruned"
    assert (node["bin"] / "multinic").read_text().endswith("multinic-v3\n")


def test_missing_link_policy_keeps_other_plugins_files(node: dict[str, Path]) -> None:
    (node["bin"] / "bridge").write_text("reference bridge")
    src = fake_bundle(node["src"], "v1")
    run(args(node, "--source", str(src), "--no-kubeconfig", "--skip-config"))  # the default is "missing"
    assert (node["bin"] / "bridge").read_text() == "reference bridge"
    run(args(node, "--source", str(src), "--no-kubeconfig", "--skip-config", "--plugin-links", "missing"))
    assert (node["bin"] / "bridge").read_text() == "reference bridge"
    assert os.readlink(node["bin"] / "macvlan") == "multinic"
    run(args(node, "--source", str(src), "--no-kubeconfig", "--skip-config", "--plugin-links", "all"))
    assert os.readlink(node["bin"] / "bridge") == "multinic"


def test_thin_config_wraps_the_cluster_network_and_names_the_kubeconfig(node: dict[str, Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    run(args(node, "--skip-binary", "--api-server", "https://10.96.0.1:443", "--pod-uid", "u-1",
             "--kubelet-dir", "/var/lib/kubelet"))
    conf = json.loads((node["net.d"] / "00-multinic.conflist").read_text())
    (plugin,) = conf["plugins"]
    assert plugin["type"] == "multinic" and plugin["delegates"] == [PRIMARY]
    assert plugin["capabilities"] == {"portMappings": True} and plugin["nodeName"] == "node-a"
    assert plugin["binDir"] == str(node["bin"])
    kc_path = node["kc"] / install.KUBECONFIG_NAME
    assert plugin["kubeconfig"] == str(kc_path)
    assert stat.S_IMODE(kc_path.stat().st_mode) == 0o600 and stat.S_IMODE(node["kc"].stat().st_mode) == 0o700
    kc = json.loads(kc_path.read_text())
    user = kc["users"][0]["user"]
    assert user == {"tokenFile": "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~projected/multinic-token/token"}
    assert kc["clusters"][0]["cluster"]["certificate-authority"].endswith("/multinic-token/ca.crt")


def test_thick_config_uses_the_shim_and_writes_no_kubeconfig(node: dict[str, Path]) -> None:
    run(args(node, "--skip-binary", "--mode", "thick", "--api-server", "https://x:1", "--token-file", "/t"))
    (plugin,) = json.loads((node["net.d"] / "00-multinic.conflist").read_text())["plugins"]
    assert plugin["type"] == "multinic-shim" and "kubeconfig" not in plugin
    assert not (node["kc"] / install.KUBECONFIG_NAME).exists()


def test_multinic_config_file_adds_keys(node: dict[str, Path], tmp_path: Path) -> None:
    extra = tmp_path / "m.json"
    extra.write_text('{"logFile": "/var/log/multus.log", "logLevel": "verbose"}')
    run(args(node, "--skip-binary", "--no-kubeconfig", "--multinic-config", str(extra)))
    (plugin,) = json.loads((node["net.d"] / "00-multinic.conflist").read_text())["plugins"]
    assert plugin["logFile"] == "/var/log/multus.log" and plugin["logLevel"] == "verbose"


def test_without_a_cluster_network_it_fails_and_writes_nothing(node: dict[str, Path]) -> None:
    (node["net.d"] / "10-cbr0.conflist").unlink()
    with pytest.raises(install.InstallError, match="no cluster network config"):
        install.run(install.parse_args(args(node, "--skip-binary", "--no-kubeconfig")), out=io.StringIO())
    assert os.listdir(node["net.d"]) == []
    assert install.main(args(node, "--skip-binary", "--no-kubeconfig")) == 1


def test_watch_regenerates_on_change_and_leaves_the_config_on_stop(node: dict[str, Path]) -> None:
    stop = threading.Event()
    a = install.parse_args(args(node, "--skip-binary", "--no-kubeconfig", "--watch", "--watch-interval", "0.05"))
    t = threading.Thread(target=install.run, args=(a, io.StringIO(), stop))
    t.start()
    ours = node["net.d"] / "00-multinic.conflist"
    try:
        for _ in range(100):
            if ours.exists():
                break
            threading.Event().wait(0.05)
        changed = dict(PRIMARY, name="cbr1")
        (node["net.d"] / "10-cbr0.conflist").write_text(json.dumps(changed))
        for _ in range(100):
            if json.loads(ours.read_text())["plugins"][0]["delegates"][0]["name"] == "cbr1":
                break
            threading.Event().wait(0.05)
        assert json.loads(ours.read_text())["plugins"][0]["delegates"][0]["name"] == "cbr1"
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive() and ours.exists(), "the config must survive the installer's exit (Multus #1527)"


def test_bad_source_is_refused(node: dict[str, Path]) -> None:
    (node["src"] / "notexec").write_text("x")
    for src in (node["src"] / "missing", node["src"] / "notexec"):
        with pytest.raises(install.InstallError):
            install.install_executable(str(src), str(node["bin"]))
    assert os.listdir(node["bin"]) == []


def test_pure_helpers() -> None:
    assert install.server_from_env({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}) == \
        "https://[fd00::1]:443"
    assert install.server_from_env({}) == ""
    doc = install.kubeconfig_doc("https://a:1", "/t", "", insecure=True)
    assert doc["clusters"][0]["cluster"] == {"server": "https://a:1", "insecure-skip-tls-verify": True}
