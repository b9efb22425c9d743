"""The PyInstaller build (packaging/multinic.spec): every face works frozen, lazily imported modules
are in the archive, the thick shim is its own small executable, and a killed binary leaves nothing.

The bundle is built once per source state (packaging/pyi_build.py caches it under $TMPDIR by a
digest of the sources), so ``make test`` pays the ≈ 40–90 s build only after a source change and
the podman e2e reuses the same bundle. The onefile comparison builds a second variant and is
``slow`` (``make soak``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from packaging import install, measure, pyi_build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def onedir() -> Path:
    if pyi_build.pyinstaller_version() is None:
        pytest.skip("PyInstaller is not installed (pip install -e '.[dev]')")
    exe = pyi_build.cached_build(False)
    assert exe is not None
    return exe


def cni(exe: Path | str, command: str, stdin: bytes = b'{"cniVersion":"1.0.0"}', argv: tuple[str, ...] = (),
        **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(exe), *argv], input=stdin, capture_output=True, timeout=120,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, **env})


def test_bundle_layout_is_one_directory_with_the_program_and_the_shim(onedir: Path) -> None:
    bundle = onedir.parent
    assert sorted(os.listdir(bundle)) == ["_internal", "multinic", "multinic-shim"]
    assert not list(bundle.rglob("tests")), "test code must not be bundled"


def test_every_module_of_ours_is_in_the_archive(onedir: Path) -> None:
    # Faces import lazily, so PyInstaller's static analysis alone would miss them.
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "pyi-archive_viewer"), "-l", "-r",
                        str(onedir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = set(r.stdout.replace("'", " ").split())
    missing = []
    for base in ("cni", "plugins", "ipam", "conformance", "packaging"):
        for f in (ROOT / base).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            # conformance/broken: sample plugins the harness's own tests run as scripts, not faces.
            if name != "packaging.entry" and not name.startswith("conformance.broken") and name not in listed:
                missing.append(name)
    assert not missing, f"not in the frozen archive: {sorted(missing)}"


def test_no_run_time_hook_imports_what_an_exec_never_uses(onedir: Path) -> None:
    # Each dropped hook imported a module at every exec for a feature multinic never uses frozen;
    # pyi_rth_setuptools imported setuptools (≈ 70 ms of a 90 ms VERSION exec), so setuptools must
    # not be in the archive either (its presence is what makes PyInstaller add the hook).
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "pyi-archive_viewer"), "-l", "-r",
                        str(onedir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = set(r.stdout.replace("'", " ").replace(",", " ").split())
    assert not listed & {"pyi_rth_setuptools", "pyi_rth_inspect", "pyi_rth_multiprocessing"}
    assert not {n for n in listed if n.split(".")[0] in ("setuptools", "pkg_resources", "_distutils_hack")}


@pytest.mark.parametrize("face", [*install.PLUGIN_NAMES, "multinic", "multinic-shim"])
def test_every_face_answers_version_through_a_symlink(onedir: Path, face: str, tmp_path: Path) -> None:
    link = tmp_path / face
    link.symlink_to(onedir.parent / ("multinic-shim" if face == "multinic-shim" else "multinic"))
    r = cni(link, "VERSION")
    assert r.returncode == 0, r
    assert "1.1.0" in json.loads(r.stdout)["supportedVersions"]


@pytest.mark.parametrize("sub", ["install", "daemon", "reconcile", "conformance", "webhook"])
def test_subcommands_start_frozen(onedir: Path, sub: str) -> None:
    r = subprocess.run([str(onedir), sub, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), (r.stdout, r.stderr)


def test_frozen_plugin_validates_with_pydantic_and_answers_code_7(onedir: Path, tmp_path: Path) -> None:
    link = tmp_path / "macvlan"
    link.symlink_to(onedir)
    bad = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "mtu": "lots"}).encode()
    r = cni(link, "ADD", bad, CNI_CONTAINERID="c", CNI_NETNS="/run/netns/none", CNI_IFNAME="net1",
            CNI_PATH="/usr/lib/cni")
    assert r.returncode != 0 and json.loads(r.stdout)["code"] == 7, r


@pytest.mark.root
def test_frozen_macvlan_add_and_del_in_a_real_namespace(onedir: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    # measure.macvlan_add_p50 makes a veth master + namespace, runs ADD (and DEL) and removes both.
    got = measure.macvlan_add_p50({"onedir": [str(_link(onedir, tmp_path, "macvlan"))]}, n=1)
    assert got["onedir"] > 0


def _link(target: Path, d: Path, name: str) -> Path:
    p = d / name
    p.symlink_to(target)
    return p


def test_shim_executable_starts_much_faster_than_the_full_program(onedir: Path) -> None:
    got = measure.version_p50({"shim": [str(onedir.parent / "multinic-shim")], "full": [str(onedir)]}, n=7)
    assert got["shim"] < got["full"], got


def test_shim_without_daemon_fails_add_with_code_11_and_runs_del_thin(onedir: Path, tmp_path: Path) -> None:
    sock = str(tmp_path / "absent.sock")
    r = cni(onedir.parent / "multinic-shim", "ADD", b'{"cniVersion":"0.4.0","name":"n","type":"multinic-shim"}',
            MULTINIC_SOCKET=sock, CNI_CONTAINERID="c", CNI_NETNS="/run/netns/x", CNI_IFNAME="eth0")
    assert r.returncode != 0 and json.loads(r.stdout)["code"] == 11


def test_killed_onedir_binary_leaves_nothing_in_tmp(onedir: Path) -> None:
    assert measure.leftovers_after_kill(str(onedir)) == []


def test_installing_the_real_bundle_gives_working_faces(onedir: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install.install_executable(str(onedir.parent), str(bin_dir))
    install.install_links(str(bin_dir), "all")
    for face in ("multinic", "multinic-shim", "bridge", "whereabouts"):
        r = cni(bin_dir / face, "VERSION")
        assert r.returncode == 0, (face, r)
    # A second install of the same build copies nothing and keeps the faces working.
    assert "already present" in install.install_executable(str(onedir.parent), str(bin_dir))


@pytest.mark.slow
def test_onefile_is_slower_and_leaks_its_unpack_dir_when_killed() -> None:
    if pyi_build.pyinstaller_version() is None:
        pytest.skip("PyInstaller is not installed")
    onefile = pyi_build.cached_build(True)
    onedir = pyi_build.cached_build(False)
    assert onefile and onedir
    got = measure.version_p50({"onefile": [str(onefile)], "onedir": [str(onedir)]}, n=9)
    assert got["onefile"] > 1.5 * got["onedir"], got
    left = measure.leftovers_after_kill(str(onefile))
    assert left and all(x.startswith("_MEI") for x in left), left

