"""Tests proving conformance.uml works: kernel features, exit codes, I/O, timeouts, cleanup.

Each boot costs ~2 s, so tests load only the modules they need.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conformance import uml as umlmod
from conformance.uml import UMLRunner, UMLSetupError, UMLTimeoutError


def _live_processes_mentioning(text: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``text``.

    The UML kernel's command line carries ``init=<scratch>/init.sh``, and its
    helper processes are forks of it, so this finds any leftover of a run.
    """
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat[stat.rfind(")") + 2] != "Z":
            found.append(int(proc.name))
    return found


@pytest.mark.uml
def test_dummy_link_after_modprobe(uml: UMLRunner) -> None:
    result = uml.run(["sh", "-c", "ip link add d0 type dummy && ip -o link show d0"], modules=["dummy"])
    assert result.exit_code == 0, result.stderr
    assert "d0:" in result.stdout


@pytest.mark.uml
def test_dummy_missing_without_module(uml: UMLRunner) -> None:
    # Proves the module loading is what makes it work (nothing is built in).
    result = uml.run(["ip", "link", "add", "d0", "type", "dummy"], modules=[])
    assert result.exit_code != 0


@pytest.mark.uml
def test_ipvlan_l2_on_dummy_master_in_netns(uml: UMLRunner) -> None:
    script = textwrap.dedent(
        """\
        set -e
        ip netns add pod
        ip link add d0 type dummy
        ip link set d0 up
        ip link add link d0 name iv0 type ipvlan mode l2
        ip link set iv0 netns pod
        ip -n pod addr add 10.9.0.2/24 dev iv0
        ip -n pod link set iv0 up
        ip -n pod -d -o link show iv0
        ip -n pod -o addr show dev iv0
        ip netns del pod
        """
    )
    result = uml.run(["sh", "-c", script], modules=["dummy", "ipvlan"])
    assert result.exit_code == 0, result.stderr
    assert "ipvlan  mode l2" in result.stdout
    assert "10.9.0.2/24" in result.stdout


@pytest.mark.uml
def test_vlan_link(uml: UMLRunner) -> None:
    script = (
        "set -e; ip link add d0 type dummy; ip link add link d0 name d0.42 type vlan id 42; ip -d -o link show d0.42"
    )
    result = uml.run(["sh", "-c", script], modules=["dummy", "8021q"])
    assert result.exit_code == 0, result.stderr
    assert "vlan protocol 802.1Q id 42" in result.stdout


@pytest.mark.uml
@pytest.mark.parametrize("code", [0, 3, 42, 255])
def test_exit_code_propagates(uml: UMLRunner, code: int) -> None:
    assert uml.run(["sh", "-c", f"exit {code}"], modules=[]).exit_code == code


@pytest.mark.uml
def test_python_snippet_uses_same_interpreter_and_captures_output(uml: UMLRunner) -> None:
    import sys

    code = "import sys; print('out', sys.executable); print('érr ✓', file=sys.stderr); sys.exit(7)"
    result = uml.python(code, modules=[])
    assert result.exit_code == 7
    assert result.stdout.strip() == f"out {sys.executable}"
    assert result.stderr.strip() == "érr ✓"
    assert result.duration > 0
    assert "Linux version" in result.console_log or "Run " in result.console_log


@pytest.mark.uml
def test_env_and_cwd(uml: UMLRunner, tmp_path: Path) -> None:
    result = uml.run(
        ["sh", "-c", 'echo "$FOO|$(pwd)|$MULTINIC_IN_UML"'],
        modules=[],
        env={"FOO": "bar baz"},
        cwd="/usr/share",
    )
    assert result.stdout.strip() == "bar baz|/usr/share|1"


@pytest.mark.uml
def test_guest_tmp_run_are_private_and_scratch_is_removed(uml: UMLRunner, tmp_path: Path) -> None:
    # tmp_path lives under /tmp, which the guest covers with a tmpfs: this also
    # checks that a scratch dir under /tmp is re-exposed to the guest.
    marker = f"multinic-uml-marker-{os.getpid()}"
    script = (
        f"set -e; touch /tmp/{marker} /run/{marker}; ip netns add {marker}; echo done > $MULTINIC_UML_SCRATCH/out.txt"
    )
    result = uml.run(["sh", "-c", script], modules=[], scratch_parent=tmp_path, collect=["out.txt"])
    assert result.exit_code == 0, result.stderr
    assert result.files["out.txt"] == b"done\n"
    assert not Path("/tmp", marker).exists()
    assert not Path("/run", marker).exists()
    assert not Path("/run/netns", marker).exists()
    assert list(tmp_path.iterdir()) == []  # scratch dir removed


@pytest.mark.uml
def test_setup_failure_is_reported(uml: UMLRunner, tmp_path: Path) -> None:
    with pytest.raises(UMLSetupError, match="no_such_module"):
        uml.run(["true"], modules=["no_such_module"], scratch_parent=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.uml
def test_hanging_guest_times_out_and_leaves_nothing(uml: UMLRunner, tmp_path: Path) -> None:
    with pytest.raises(UMLTimeoutError) as info:
        uml.run(["sh", "-c", "echo started; sleep 600"], modules=[], timeout=8, scratch_parent=tmp_path)
    assert info.value.result is not None
    assert info.value.result.stdout.strip() == "started"
    assert list(tmp_path.iterdir()) == []
    assert _live_processes_mentioning(str(tmp_path)) == []


@pytest.mark.uml
def test_pytest_in_guest_reports_cases(uml: UMLRunner) -> None:
    # data/selftest_guest.py does not match test_*.py, so only this explicit
    # selection collects it; it passes, fails and skips one test each.
    run = uml.pytest(str(Path(__file__).parent / "data" / "selftest_guest.py"), "-q", modules=[])
    outcomes = {case.nodeid.rsplit("::", 1)[1]: case for case in run.cases}
    assert {name: c.outcome for name, c in outcomes.items()} == {
        "test_passes_in_guest": "passed",
        "test_fails_in_guest": "failed",
        "test_skips_in_guest": "skipped",
    }, run.summary()
    assert run.exit_code == 1
    summary = run.summary()
    assert "test_fails_in_guest" in summary and "deliberate failure 1234" in summary
    assert "test_passes_in_guest" not in summary


def test_parse_junit_outcomes() -> None:
    xml = b"""<?xml version="1.0"?><testsuites><testsuite>
      <testcase classname="tests.kernel.guest.test_x" name="test_ok"/>
      <testcase classname="tests.kernel.guest.test_x" name="test_bad"><failure message="assert 1 == 2">trace</failure></testcase>
      <testcase classname="tests.kernel.guest.test_x" name="test_err"><error message="fixture boom"/></testcase>
      <testcase classname="tests.kernel.guest.test_x" name="test_skip"><skipped message="no"/></testcase>
    </testsuite></testsuites>"""
    cases = umlmod.parse_junit(xml)
    assert [(c.nodeid, c.outcome, c.message) for c in cases] == [
        ("tests.kernel.guest.test_x::test_ok", "passed", ""),
        ("tests.kernel.guest.test_x::test_bad", "failed", "assert 1 == 2"),
        ("tests.kernel.guest.test_x::test_err", "error", "fixture boom"),
        ("tests.kernel.guest.test_x::test_skip", "skipped", "no"),
    ]
    assert cases[1].details == "trace"


def test_uml_available_reason_when_kernel_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(umlmod.KERNEL_ENV, "/nonexistent/linux.uml")
    reason = umlmod.uml_available()
    assert reason is not None and "not installed" in reason and "user-mode-linux" in reason


@pytest.mark.uml
def test_cli_exit_code(uml: UMLRunner, capfd: pytest.CaptureFixture[str]) -> None:
    assert umlmod.main(["--no-modules", "--", "sh", "-c", "echo hi; exit 4"]) == 4
    assert "hi" in capfd.readouterr().out


@pytest.mark.uml
def test_guest_watchdog_powers_off_without_host_kill(
    uml: UMLRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Normally the watchdog fires 30 s after the host-side timeout, only if the
    # host process died; shorten it to see the guest power itself off.
    real = umlmod._init_script

    def short_watchdog(**kwargs: Any) -> str:
        kwargs["watchdog"] = 3
        return real(**kwargs)

    monkeypatch.setattr(umlmod, "_init_script", short_watchdog)
    with pytest.raises(umlmod.UMLError) as info:
        uml.run(["sleep", "600"], modules=[], timeout=60, scratch_parent=tmp_path)
    assert not isinstance(info.value, UMLTimeoutError)
    assert info.value.result is not None
    assert "watchdog: powering off" in info.value.result.console_log
    assert info.value.result.duration < 30
    assert list(tmp_path.iterdir()) == []
