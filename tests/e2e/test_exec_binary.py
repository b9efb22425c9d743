"""The installed ``multinic`` executable, exec'd exactly as a runtime would (env + stdin → stdout).

Every bad input must give a non-zero exit and exactly one JSON error document on stdout,
whatever face of the executable is called. VERSION must stay cheap: no pyroute2 or pydantic
on that path (start-up budget: rule 10, cni/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

FACES = {"meta": [], "plugin-macvlan": ["plugin", "macvlan"], "plugin-host-local": ["plugin", "host-local"]}

BASE_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "e2e-ctr",
    "CNI_NETNS": "/run/netns/does-not-matter",
    "CNI_IFNAME": "net1",
    "CNI_PATH": "/usr/lib/cni",
}

# Modules that must never load to answer VERSION or to refuse a bad request.
HEAVY = ("pyroute2", "pydantic", "pydantic_core", "yaml", "ssl", "asyncio", "http", "subprocess",
         "cni.k8s", "cni.delegator.core", "cni.netlink", "plugins", "ipam")


def _conf(version: str = "1.0.0", **extra: Any) -> bytes:
    return json.dumps({"cniVersion": version, "name": "e2e", "type": "macvlan", **extra}).encode()


def run(binary: str, face: list[str], env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run([binary, *face], input=stdin, env=full, capture_output=True, timeout=60, check=False)


def one_doc(out: bytes) -> dict[str, Any]:
    assert out.endswith(b"\n") and out.count(b"\n") == 1, out
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("face", FACES.values(), ids=FACES.keys())
def test_version(multinic_bin: str, face: list[str]) -> None:
    p = run(multinic_bin, face, {"CNI_COMMAND": "VERSION"}, _conf())
    assert p.returncode == 0, p.stderr
    assert one_doc(p.stdout) == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


BAD = {
    "missing CNI_COMMAND": ({k: v for k, v in BASE_ENV.items() if k != "CNI_COMMAND"}, _conf(), 4),
    "empty CNI_COMMAND": ({**BASE_ENV, "CNI_COMMAND": ""}, _conf(), 4),
    "unknown command": ({**BASE_ENV, "CNI_COMMAND": "UPDATE"}, _conf(), 4),
    "malformed JSON": (BASE_ENV, b'{"cniVersion": "1.0.0",', 6),
    "JSON not an object": (BASE_ENV, b"[]", 6),
    "unknown cniVersion": (BASE_ENV, _conf("0.5.0"), 1),
    "malformed cniVersion": (BASE_ENV, _conf("1.0"), 1),
    "CHECK on 0.3.1": ({**BASE_ENV, "CNI_COMMAND": "CHECK"}, _conf("0.3.1"), 1),
    "STATUS on 1.0.0": ({"CNI_COMMAND": "STATUS"}, _conf("1.0.0"), 1),
    "GC on 1.0.0": ({"CNI_COMMAND": "GC"}, _conf("1.0.0"), 1),
    "ADD without CNI_NETNS": ({k: v for k, v in BASE_ENV.items() if k != "CNI_NETNS"}, _conf(), 4),
    "ADD without CNI_CONTAINERID": ({k: v for k, v in BASE_ENV.items() if k != "CNI_CONTAINERID"}, _conf(), 4),
    "ADD without CNI_PATH": ({k: v for k, v in BASE_ENV.items() if k != "CNI_PATH"}, _conf(), 4),
    "DEL without CNI_IFNAME": ({k: v for k, v in {**BASE_ENV, "CNI_COMMAND": "DEL"}.items() if k != "CNI_IFNAME"}, _conf(), 4),
    "ifname too long": ({**BASE_ENV, "CNI_IFNAME": "a" * 16}, _conf(), 4),
    "ifname with slash": ({**BASE_ENV, "CNI_IFNAME": "../x"}, _conf(), 4),
    "container id traversal": ({**BASE_ENV, "CNI_CONTAINERID": "../../etc"}, _conf(), 4),
    "oversized stdin": (BASE_ENV, _conf(pad="x" * (4 * 1024 * 1024 + 10)), 6),
}


# skel refuses all of these before any plugin code runs, so two faces are enough.
@pytest.mark.parametrize("face", [FACES["meta"], FACES["plugin-macvlan"]], ids=["meta", "plugin-macvlan"])
@pytest.mark.parametrize("case", BAD.keys())
def test_bad_input_is_one_error_document(multinic_bin: str, face: list[str], case: str) -> None:
    env, stdin, code = BAD[case]
    p = run(multinic_bin, face, env, stdin)
    assert p.returncode != 0
    doc = one_doc(p.stdout)
    assert doc["code"] == code, doc
    assert set(doc) <= {"cniVersion", "code", "msg", "details"} and doc["msg"]
    assert b"Traceback" not in p.stdout and b"Traceback" not in p.stderr


def test_unknown_plugin_face_fails_clearly(multinic_bin: str) -> None:
    p = run(multinic_bin, ["plugin", "nosuch"], {}, b"")
    assert p.returncode != 0 and p.stdout == b""
    err = p.stderr.decode()
    assert "unknown plugin type 'nosuch'" in err and "macvlan" in err and "host-local" in err
    # Called as a CNI plugin, it still answers with one error document.
    for cmd in ("ADD", "VERSION"):
        p = run(multinic_bin, ["plugin", "nosuch"], {**BASE_ENV, "CNI_COMMAND": cmd}, _conf())
        assert p.returncode != 0
        doc = one_doc(p.stdout)
        assert doc["code"] == 50 and "nosuch" in doc["msg"]


def test_plugin_face_without_type_and_unknown_subcommand(multinic_bin: str) -> None:
    p = run(multinic_bin, ["plugin"], {}, b"")
    assert p.returncode == 2 and b"usage: multinic plugin TYPE" in p.stderr
    p = run(multinic_bin, ["frobnicate"], {}, b"")
    assert p.returncode == 2 and b"unknown subcommand 'frobnicate'" in p.stderr and p.stdout == b""


def test_no_cni_env_prints_usage_not_json(multinic_bin: str) -> None:
    p = run(multinic_bin, [], {}, b"")
    assert p.returncode == 2 and p.stdout == b"" and b"usage: multinic" in p.stderr


def test_version_flag(multinic_bin: str) -> None:
    p = run(multinic_bin, ["--version"], {}, b"")
    assert p.returncode == 0 and p.stdout.startswith(b"multinic ") and b"1.1.0" in p.stdout


def test_meta_with_missing_external_delegate_type_is_103(multinic_bin: str, tmp_path: Any) -> None:
    conf = {
        "cniVersion": "1.0.0", "name": "meta", "type": "multinic", "cniDir": str(tmp_path / "cache"),
        "logFile": str(tmp_path / "multinic.log"), "logLevel": "error",
        "delegates": [{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "no-such-cni-plugin"}]}],
    }
    p = run(multinic_bin, [], {**BASE_ENV, "CNI_PATH": str(tmp_path)}, json.dumps(conf).encode())
    assert p.returncode != 0
    doc = one_doc(p.stdout)
    assert doc["code"] == 103 and "no-such-cni-plugin" in doc["msg"], doc
    assert str(tmp_path) in doc["msg"], "the error names the CNI_PATH that was searched"
    # The exec ends with os._exit (cni.main.exit_now): the log line is on disk all the same.
    assert "no-such-cni-plugin" in (tmp_path / "multinic.log").read_text()


# ---- start-up budget ---------------------------------------------------------------------------


def _imported(binary: str, face: list[str], env: dict[str, str], stdin: bytes) -> set[str]:
    """Module names imported by one exec of the console script (python -X importtime)."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    p = subprocess.run([sys.executable, "-X", "importtime", binary, *face], input=stdin, env=full,
                       capture_output=True, timeout=60, check=False)
    mods = set()
    for line in p.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                mods.add(name)
    assert "cni.main" in mods, p.stderr.decode()[-2000:]
    return mods


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("face", FACES.values(), ids=FACES.keys())
def test_version_path_imports_nothing_heavy(multinic_bin: str, face: list[str]) -> None:
    mods = _imported(multinic_bin, face, {"CNI_COMMAND": "VERSION"}, _conf())
    assert _heavy(mods) == [], "VERSION must not import these (start-up budget): keep imports inside functions"


def test_refused_request_imports_nothing_heavy(multinic_bin: str) -> None:
    mods = _imported(multinic_bin, [], {**BASE_ENV, "CNI_IFNAME": "bad/name"}, _conf())
    assert _heavy(mods) == []


def test_importtime_probe_can_see_a_heavy_import(multinic_bin: str) -> None:
    # The detector itself must work: a real ADD through the delegator does load pydantic.
    mods = _imported(multinic_bin, [], BASE_ENV, json.dumps({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "cniDir": "/nonexistent/x", "delegates": "bad"}).encode())
    assert "pydantic" in mods


@pytest.mark.parametrize("missing", ["name", "type"])
def test_plugin_face_refuses_config_without_name_or_type_before_touching_anything(missing: str, tmp_path: Any) -> None:
    conf = {"cniVersion": "1.0.0", "name": "l2", "type": "macvlan", "master": "nonexistent0", "ipam": {}}
    del conf[missing]
    env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID="c1", CNI_NETNS=str(tmp_path / "no-such-netns"),
               CNI_IFNAME="net1", CNI_PATH="/usr/lib/cni")
    exe = os.path.join(os.path.dirname(sys.executable), "multinic")
    proc = subprocess.run([exe, "plugin", "macvlan"], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, check=False)
    assert proc.returncode != 0
    doc = json.loads(proc.stdout)
    assert doc["code"] == 7 and missing in doc["msg"]
