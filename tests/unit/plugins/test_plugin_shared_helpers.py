"""The helpers the plugins share after de-duplication: DEL steps, the flock, the netfilter exec.

No root, no kernel: each helper's contract is what its callers (macvlan/ipvlan/bridge DEL,
host-local and the chained plugins' locks, bridge's ipMasq and portmap) rely on.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from cni import fslock
from cni.spec.errors import CNIError, InvalidConfig, IOFailure, KernelError, NotFound, PluginNotAvailable
from plugins import _iface
from plugins._masq import run_tool


def test_steps_run_every_step_and_report_all_failures_with_the_first_code() -> None:
    ran: list[str] = []

    def fail(name: str, exc: CNIError) -> None:
        ran.append(name)
        raise exc

    steps = _iface.Steps()
    steps.run(fail, "ipam", IOFailure("lease file unwritable"), prefix="IPAM DEL: ")
    steps.run(ran.append, "link")
    steps.run(fail, "rules", NotFound("no nft"))
    with pytest.raises(CNIError) as ei:
        steps.raise_all()
    assert ran == ["ipam", "link", "rules"]
    assert ei.value.code == IOFailure.code
    assert ei.value.msg == "IPAM DEL: lease file unwritable"
    assert "no nft" in str(ei.value.details)


def test_steps_pass_a_single_failure_through_unchanged() -> None:
    err = InvalidConfig("bad")

    def fail() -> None:
        raise err

    steps = _iface.Steps()
    steps.run(lambda: None)
    steps.raise_all()  # nothing failed: nothing raised
    steps.run(fail)
    with pytest.raises(InvalidConfig) as ei:
        steps.raise_all()
    assert ei.value is err


def test_fslock_holds_an_exclusive_lock_until_the_fd_is_closed(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    fd = fslock.acquire(path, 0o600)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        other = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)
    fd = fslock.acquire(path)  # released by the close: a second holder gets it at once
    os.close(fd)


def test_fslock_leaves_open_errors_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fslock.acquire(str(tmp_path / "no-such-dir" / "lock"))


def test_run_tool_names_a_missing_binary_with_the_callers_error_and_hint() -> None:
    with pytest.raises(KernelError) as ei:
        run_tool(["multinic-no-such-tool-xyz"])
    assert ei.value.msg == "multinic-no-such-tool-xyz is not installed"
    with pytest.raises(PluginNotAvailable) as pe:
        run_tool(["multinic-no-such-tool-xyz"], who="portmap: ", missing=PluginNotAvailable, hint="install nftables")
    assert pe.value.msg == "portmap: multinic-no-such-tool-xyz is not installed" and pe.value.details == "install nftables"


def test_run_tool_returns_a_failing_exit_status_for_the_caller_to_judge() -> None:
    proc = run_tool(["sh", "-c", "cat; echo oops >&2; exit 3"], "in")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "in", "oops\n")


def test_run_tool_turns_a_hang_into_a_kernel_error() -> None:
    with pytest.raises(KernelError) as ei:
        run_tool(["sleep", "5"], who="portmap: ", timeout=0.2)
    assert ei.value.msg == "portmap: sleep did not finish within 0s"


def test_run_tool_waits_for_a_tool_that_outlives_its_pipes_and_keeps_its_exit_status() -> None:
    # The pipes reach EOF before the process exits: the exit status is still the tool's own.
    proc = run_tool(["sh", "-c", "exec >&- 2>&-; sleep 0.2; exit 4"], timeout=5)
    assert proc.returncode == 4


def test_run_tool_times_out_a_tool_that_closed_its_pipes_but_hangs() -> None:
    # Past communicate's reads the wait itself must honour the timeout (and kill the tool).
    with pytest.raises(KernelError) as ei:
        run_tool(["sh", "-c", "exec >&- 2>&-; exec sleep 5"], who="portmap: ", timeout=0.3)
    assert ei.value.msg == "portmap: sh did not finish within 0s"


def test_run_tool_does_not_sleep_waiting_for_a_quick_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    # CPython's wait-with-timeout polls with sleeps of ≥ 1 ms; run_tool waits on a pidfd instead.
    import time

    if not hasattr(os, "pidfd_open"):
        pytest.skip("this interpreter has no os.pidfd_open (run_tool falls back to CPython's polling)")
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(s), real_sleep(s)))
    for _ in range(20):
        assert run_tool(["true"]).returncode == 0
    assert slept == []


def test_portmap_conntrack_flush_that_hangs_is_a_warning_not_a_failed_add(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from plugins import portmap
    from plugins._portmap_rules import PortMapping

    calls: list[list[str]] = []

    def hangs(argv: list[str], **kw: object) -> None:
        calls.append(argv)
        raise subprocess.TimeoutExpired(argv, 10)

    monkeypatch.setattr(portmap.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(portmap.subprocess, "run", hangs)
    monkeypatch.setattr(portmap, "_udp_flows_present", lambda: {(4, 5353), (6, 5353), (4, 8080)})
    portmap._flush_udp_conntrack((PortMapping(5353, 53, "udp"), PortMapping(8080, 80, "tcp")), [4, 6])
    assert [c[c.index("--orig-port-dst") + 1] for c in calls] == ["5353", "5353"]  # udp only, both families


def test_portmap_conntrack_flush_runs_only_for_ports_the_kernel_tracks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No exec when no UDP flow to a mapped port is tracked (the usual ADD); one per tracked (family, port)."""
    from plugins import portmap
    from plugins._portmap_rules import PortMapping

    calls: list[list[str]] = []
    monkeypatch.setattr(portmap.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(portmap.subprocess, "run", lambda argv, **kw: calls.append(argv))
    maps = (PortMapping(5353, 53, "udp"), PortMapping(5354, 54, "udp"))
    monkeypatch.setattr(portmap, "_udp_flows_present", lambda: {(4, 9999), (6, 5353)})
    portmap._flush_udp_conntrack(maps, [4, 6])
    assert [(c[c.index("-f") + 1], c[c.index("--orig-port-dst") + 1]) for c in calls] == [("ipv6", "5353")]
    calls.clear()
    monkeypatch.setattr(portmap, "_udp_flows_present", lambda: set())
    portmap._flush_udp_conntrack(maps, [4, 6])
    assert calls == []
    monkeypatch.setattr(portmap, "_udp_flows_present", lambda: None)  # table unreadable: flush blindly
    portmap._flush_udp_conntrack(maps, [4])
    assert [c[c.index("--orig-port-dst") + 1] for c in calls] == ["5353", "5354"]


def test_conntrack_udp_flows_reads_the_original_direction() -> None:
    from plugins._portmap_rules import conntrack_udp_flows

    text = (
        "ipv4     2 udp      17 27 src=10.0.0.9 dst=10.0.0.1 sport=40000 dport=5353 [UNREPLIED] src=10.0.0.1 dst=10.0.0.9 sport=5353 dport=40000 mark=0 use=2\n"
        "ipv6     10 udp      17 20 src=fd00::9 dst=fd00::1 sport=1 dport=53 src=fd00::1 dst=fd00::9 sport=53 dport=1 mark=0 use=2\n"
        "ipv4     2 tcp      6 60 SYN_SENT src=10.0.0.9 dst=10.0.0.1 sport=3 dport=8080 [UNREPLIED] src=10.0.0.1 dst=10.0.0.9 sport=8080 dport=3\n"
        "ipv4     2 unknown  2 594 src=10.77.0.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=10.77.0.1 mark=0 zone=0 use=2\n"
    )
    assert conntrack_udp_flows(text) == {(4, 5353), (6, 53)}


def test_chained_state_written_by_many_threads_at_once_never_collides(tmp_path: Path) -> None:
    """The daemon runs plugins in threads: each write needs its own temp file (a name by PID alone
    would be shared, and one thread's rename would find the other's temp file gone)."""
    import json
    import threading

    from plugins._chained import read_state, write_state

    path = str(tmp_path / "state" / "net:cid:eth0.json")
    errors: list[BaseException] = []
    gate = threading.Barrier(8)

    def writer(n: int) -> None:
        gate.wait()
        try:
            for i in range(60):
                write_state(path, {"writer": n, "i": i, "pad": "x" * 4096})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    doc = read_state(path)
    assert doc is not None and doc["i"] == 59 and len(doc["pad"]) == 4096
    assert json.loads(Path(path).read_text()) == doc
    assert os.listdir(tmp_path / "state") == ["net:cid:eth0.json"]  # no temp file left behind
    assert (Path(path).stat().st_mode & 0o777) == 0o600


def test_chained_state_is_not_fsynced_but_the_delegator_plan_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync only where crash safety needs it: the plan before the kernel is touched, not state that
    describes kernel objects a power loss removes too."""
    from cni.delegator import cache
    from plugins._chained import write_state

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    write_state(str(tmp_path / "s" / "a.json"), {"x": 1})
    assert synced == []
    cache.save(str(tmp_path / "cache"), cache.Record(container_id="c1"))  # the plan: durable by default
    assert len(synced) == 2  # the file, then its directory entry
    synced.clear()
    cache.save(str(tmp_path / "cache"), cache.Record(container_id="c1"), durable=False)  # a result update
    assert synced == []
    from cni.k8s.source import LocalSource

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "pod.json").write_text('{"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u"}}')
    src = LocalSource(str(tmp_path / "m"))
    assert src.set_network_status("default", "p", "[]") is True  # the manifest source's pod status
    assert synced == []
    assert (src.get_pod("default", "p") or {})["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] == "[]"


def test_portmap_fast_del_skips_a_family_whose_tools_are_missing_and_masq_collects_tool_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table-less DEL batch keeps DEL's rules: a family without its tools is skipped (portmap), a
    failing tool is reported with the others after every step ran (bridge ipMasq), never an early stop."""
    import ipaddress
    import subprocess

    from plugins import _masq, portmap
    from plugins._portmap_rules import PortMapping, Settings

    calls: list[str] = []

    def tools(argv: list[str], stdin: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv[0])
        if argv[0].startswith("ip6"):
            raise PluginNotAvailable(f"{argv[0]} is not installed")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(portmap, "run_tool", tools)
    maps = [PortMapping(80, 80, "tcp"), PortMapping(81, 81, "tcp", ipaddress.ip_address("fd00::1"))]
    portmap._ipt_remove("n", "c", [4, 6], mappings=maps, settings=Settings())
    assert calls == ["iptables-restore", "ip6tables-restore"]

    calls.clear()

    def hangs(argv: list[str], stdin: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv[0])
        if argv[0] == "iptables-restore":
            raise KernelError("iptables-restore did not finish within 5s")
        return subprocess.CompletedProcess(argv, 1, "", "Error: No such file or directory")

    monkeypatch.setattr(_masq, "run_tool", hangs)
    monkeypatch.setattr(_masq.shutil, "which", lambda name: f"/usr/sbin/{name}")
    with pytest.raises(KernelError, match="did not finish"):
        _masq.teardown("n", "eth0", "c", [ipaddress.ip_interface("10.0.0.2/24")])
    assert calls == ["iptables-restore", "nft"]  # v6 has no address: not touched; nft still listed
