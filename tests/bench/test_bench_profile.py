"""The per-phase profile (tests/bench/profile.py, phasehook) and the targets' explanations. No time is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import _report
from tests.bench.profile import HOOK, group_of
from tests.bench.run import targets

PROGRAM = r"""
import os, socket, struct, subprocess, sys
import json  # an import the hook times
subprocess.run(["true"], check=True)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
os.fsync(fd)
os.close(fd)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
# RTM_GETLINK for index 1 (lo): nlmsghdr + ifinfomsg
msg = struct.pack("=LHHLL", 32, 18, 1, 1, 0) + struct.pack("=BxHiII", 0, 0, 1, 0, 0)
s.sendto(msg, (0, 0))
s.recv(65536)
s.close()
"""


def _profiled(tmp_path: Path, program: str, *args: str, hook: bool = True) -> dict:
    out = tmp_path / "phases.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MULTINIC_PHASES")}
    if hook:
        env.update(PYTHONPATH=HOOK, MULTINIC_PHASES=str(out))
    subprocess.run([sys.executable, "-c", program, *args], env=env, check=True, timeout=60)
    return json.loads(out.read_text()) if out.exists() else {}


def test_hook_measures_imports_execs_fsync_and_netlink_by_message_type(tmp_path: Path) -> None:
    doc = _profiled(tmp_path, PROGRAM, str(tmp_path / "f"))
    phases = doc["phases"]
    for name in ("imports", "exec true", "fsync", "netlink kernel GETLINK"):
        assert name in phases and phases[name][1] >= 1, (name, phases)
    assert phases["exec true"][1] == 1 and phases["fsync"][1] == 1
    assert doc["t_start"] <= doc["t_exit"] and doc["pid"] > 0


def test_hook_is_inert_without_its_variable(tmp_path: Path) -> None:
    out = tmp_path / "phases.json"
    env = {k: v for k, v in os.environ.items() if k != "MULTINIC_PHASES"}
    env["PYTHONPATH"] = HOOK
    probe = "import subprocess, os, sys; print(hasattr(subprocess.run, '__wrapped__'), os.fsync.__module__, 'sitecustomize' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert p.stdout.split() == ["False", "posix", "True"] and not out.exists()  # loaded, but changed nothing
    env["MULTINIC_PHASES"] = str(out)
    p = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert p.stdout.split() == ["True", "sitecustomize", "True"] and out.exists()


def test_phases_fall_into_the_issues_groups() -> None:
    assert group_of("daemon: netlink kernel NEWLINK") == "netlink"
    assert group_of("exec iptables-restore") == "iptables/nft/conntrack"
    assert group_of("daemon: cache write") == group_of("fsync") == "plan and cache writes"
    assert group_of("shim: transport (socket time beyond the daemon's handling)") == "shim transport"
    assert group_of("shim: interpreter start") == group_of("interpreter exit") == "interpreter start/exit"
    assert group_of("IPAM (host-local/static, incl. files)") == "IPAM (incl. file I/O)"
    assert group_of("daemon: plugins (Python)") == "Python (plugins, delegator, daemon, shim)"


def _rows() -> list[dict]:
    def lat(case: str, op: str, stack: str, p50: float, ratio: float | None = None, **kw: object) -> dict:
        return {"section": "1", "case": case, "op": op, "stack": stack, "n": 5, "p50_ms": p50, "p95_ms": p50,
                "ratio_p50": ratio, **kw}

    def prof(stack: str, op: str, phases: dict[str, float]) -> dict:
        groups: dict[str, float] = {}
        for p, ms in phases.items():
            groups[group_of(p)] = groups.get(group_of(p), 0.0) + ms
        return {"section": "7", "case": "profile", "stack": stack, "op": op, "n": 3, "mean_ms": sum(phases.values()),
                "phases": phases, "groups": groups}

    return [
        lat("pod-3-attachments", "ADD", "go", 100.0), lat("pod-3-attachments", "ADD", "thick", 80.0, 0.8, daemon_mean_ms=50.0),
        lat("pod-3-attachments", "DEL", "go", 100.0), lat("pod-3-attachments", "DEL", "thick", 40.0, 0.4),
        prof("thick", "ADD", {"daemon: netlink kernel NEWLINK": 30.0, "shim: interpreter start": 20.0, "daemon: exec iptables-restore": 8.0}),
        prof("floor", "ADD", {"ip -batch (host)": 55.0, "iptables-restore": 5.0}),
    ]


def test_a_missed_target_is_explained_with_the_profile_and_the_floor() -> None:
    out = {t["key"]: t for t in targets(_rows())}
    add, dele = out["pod-add-thick"], out["pod-del-thick"]
    assert dele["met"] is True and "why" not in dele
    assert add["met"] is False
    why = add["why"]
    assert "≤ 50.0 ms" in why and "netlink 30.0" in why and "daemon: netlink kernel NEWLINK 30.0" in why
    assert "floor" in why and "60.0 ms" in why and "alone exceeds the target" in why
    assert out["cri-thick"]["met"] is None and out["burst-thick"]["met"] is None  # not measured in these rows
    line = next(x for x in _report._targets_table(list(out.values())) if x.startswith("| pod ADD thick"))
    assert "Why (section 7's profile)" in line


def test_profile_table_lists_groups_and_every_phase() -> None:
    table = "\n".join(_report._profile_table(_rows()))
    assert "| thick | ADD | 3 | 58.0 |" in table and "| floor | ADD | 3 | 60.0 |" in table
    assert "daemon: exec iptables-restore 8.00" in table


@pytest.mark.slow
def test_profile_section_measures_thin_thick_and_the_floor(tmp_path: Path) -> None:
    """`make bench`'s section 7 end to end (root, real namespaces): every stack and op has phases that add
    up to its mean wall time, the floor's are ip -batch/iptables-restore, thick's include the shim's."""
    if os.geteuid() != 0:
        pytest.skip("needs root (real network namespaces, iptables)")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "MULTINIC_EXEC_TYPES"}
    p = subprocess.run([sys.executable, "-m", "tests.bench.run", "--quick", "--only", "profile", "--out", str(tmp_path),
                        "--no-readme", "--no-plot"], cwd=root, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    rows = {(r["stack"], r["op"]): r for r in doc["rows"] if r.get("case") == "profile" and "phases" in r}
    assert set(rows) == {(s, op) for s in ("go", "thin", "thick", "floor") for op in ("ADD", "DEL")}, doc["rows"]
    for r in rows.values():
        assert abs(sum(r["phases"].values()) - r["mean_ms"]) < 0.1 * len(r["phases"]) + 0.5
        assert abs(sum(r["groups"].values()) - r["mean_ms"]) < 0.1 * len(r["groups"]) + 0.5
    assert "iptables-restore" in rows[("floor", "ADD")]["phases"]
    assert any(k.startswith("ip -batch") for k in rows[("floor", "ADD")]["phases"])
    assert {"imports", "interpreter start", "exec iptables-restore"} <= set(rows[("thin", "ADD")]["phases"])
    assert any(k.startswith("netlink kernel NEWLINK") for k in rows[("thin", "ADD")]["phases"])
    thick = rows[("thick", "ADD")]["phases"]
    assert "shim: interpreter start" in thick and "shim: transport (socket time beyond the daemon's handling)" in thick
    assert any(k.startswith("daemon: netlink kernel") for k in thick)
    assert "## 7. Where one pod ADD/DEL spends its time" in (tmp_path / "latest.md").read_text()
