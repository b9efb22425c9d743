"""Pure parts of the harness: JSON document splitting, error envelopes, diffs, pools, reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from conformance import profiles, report
from conformance.execplug import Outcome, json_docs
from conformance.lab import diff
from conformance.model import CheckResult, Report, percentile


def _out(stdout: bytes, code: int = 1) -> Outcome:
    return Outcome("ADD", {}, b"", code, stdout, b"", 0.01)


def test_two_json_documents_are_not_one_error() -> None:
    assert json_docs(b'{"a":1}\n{"b":2}\n') == ([{"a": 1}, {"b": 2}], "")
    assert "2 JSON documents" in (_out(b'{"code":7,"msg":"x"}{"code":7,"msg":"x"}').envelope_problem() or "")


def test_error_envelope_needs_code_msg_and_nonzero_exit() -> None:
    assert _out(b'{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"d"}').envelope_problem() is None
    assert "exit code 0" in (_out(b'{"code":7,"msg":"bad"}', 0).envelope_problem() or "")
    assert "code" in (_out(b'{"code":"7","msg":"bad"}').envelope_problem() or "")
    assert "not JSON" in (_out(b"panic: oops").envelope_problem() or "")


def test_brief_quotes_stdout_else_stderr_cut_to_its_limit() -> None:
    assert _out(b"  out  ").brief() == "out"
    assert Outcome("DEL", {}, b"", 1, b"", b"err\n", 0.01).brief() == "err"
    assert _out(b"").brief() == "(no output)"
    assert _out(b"x" * 500).brief() == "x" * 300
    assert _out(b"x" * 500).brief(400) == "x" * 400


def test_expect_ok_fails_with_the_exit_code_and_output() -> None:
    from conformance.checks import expect_ok
    from conformance.model import Fail

    expect_ok(_out(b"{}", 0), "DEL")
    with pytest.raises(Fail, match=r"DEL without ADD failed \(exit 7\): boom"):
        expect_ok(_out(b"boom", 7), "DEL without ADD")


def test_diff_ignores_exempt_interfaces_and_reports_both_directions() -> None:
    before = {"host": {"links": [["link a", "a"]], "addrs": []}}
    after = {"host": {"links": [["link b", "b"], ["link veth1", "veth1"]], "addrs": []}}
    d = diff(before, after, exempt={"veth1"})
    assert d == {"host": {"links": {"added": ["link b"], "removed": ["link a"]}}}


def test_with_pool_limits_the_range_and_skips_non_pools() -> None:
    conf = profiles.sample_config("interface", "macvlan")
    pooled = profiles.with_pool(conf, 120, 2)
    assert pooled is not None
    assert pooled["ipam"]["ranges"] == [[{**conf["ipam"]["ranges"][0][0], "rangeStart": "10.78.0.120", "rangeEnd": "10.78.0.121"}]]
    assert profiles.with_pool(profiles.sample_config("ipam", "static"), 1, 1) is None


def test_percentile_nearest_rank() -> None:
    assert percentile([0.1, 0.2, 0.3, 0.4], 50) == 0.2
    assert percentile([0.1] * 19 + [5.0], 95) == 0.1
    assert percentile([0.1] * 18 + [5.0, 5.0], 95) == 5.0


def test_reports_summary_line_junit_and_json_round_trip() -> None:
    rep = Report("x", "interface", ["1.0.0"], ["1.0.0"])
    rep.results = [
        CheckResult("a", "a", "", "t", "SPEC §DEL", "MUST", "pass"),
        CheckResult("b", "b", "", "t", "SPEC §DEL", "MUST", "fail", "leaked", [{"label": "DEL"}]),
        CheckResult("c", "c", "", "t", "SPEC §GC", "SHOULD", "skip", "no 1.1.0"),
    ]
    text = report.terminal(rep)
    assert text.rstrip().splitlines()[-1] == "1 passed, 1 failed, 1 skipped"
    suite = ET.fromstring(report.junit(rep))
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    assert Report.from_dict(rep.to_dict()).summary() == rep.summary()
    assert [r.id for r in rep.must_failures] == ["b"]


def test_whereabouts_pool_and_invalid_variant_use_the_keys_whereabouts_reads() -> None:
    conf = profiles.sample_config("ipam", "whereabouts")
    assert conf["type"] == profiles.IPAM_CALLER and conf["ipam"]["datastore"] == "file"  # spec: a config has a type
    pooled = profiles.with_pool(conf, 120, 2)
    assert pooled is not None
    assert (pooled["ipam"]["range_start"], pooled["ipam"]["range_end"]) == ("10.78.0.120", "10.78.0.121")  # inclusive
    assert profiles.invalid_variant("ipam", conf)["ipam"]["range"] == "not-a-cidr"  # 'ranges' would be ignored


def test_meta_configs_expose_the_delegate_pool_and_a_meta_level_invalid_key() -> None:
    conf = profiles.sample_config("meta", "multinic")
    pooled = profiles.with_pool(conf, 110, 1)
    assert pooled is not None
    assert pooled["delegates"][0]["ipam"]["ranges"][0][0]["rangeStart"] == "10.78.0.110"
    assert profiles.invalid_variant("meta", conf)["delegates"] == {"not": "a list"}


def test_waivers_parse_and_refuse_a_missing_reason() -> None:
    import pytest

    from conformance.cli import parse_waivers

    assert parse_waivers(["gc-attachments=pools are cluster-wide"]) == {"gc-attachments": "pools are cluster-wide"}
    for bad in ("gc-attachments", "gc-attachments=", "=why"):
        with pytest.raises(ValueError):
            parse_waivers([bad])


def test_conformance_package_imports_have_no_cycle() -> None:
    """issue 21 §2: checks ↔ runner ↔ model was a cycle; the shared context has its own module now.
    Every relative import counts, deferred ones too (a cycle hidden in a function is still a cycle)."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[2] / "conformance"
    graph: dict[str, set[str]] = {}
    for path in pkg.glob("*.py"):
        edges = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    edges.add(node.module.split(".")[0])
                else:
                    edges.update(a.name for a in node.names)
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(mod: str, stack: list[str]) -> None:
        if seen.get(mod) == 2:
            return
        assert seen.get(mod) != 1, f"import cycle: {' -> '.join([*stack, mod])}"
        seen[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            visit(dep, [*stack, mod])
        seen[mod] = 2

    for mod in sorted(graph):
        visit(mod, [])


def test_whole_run_leftovers_shared_state_is_kept_per_attachment_state_is_a_leak() -> None:
    from conformance.leaks import judge

    base = {"host": {"links": [["link lo", "lo"]], "iptables": []}, "template": {"sysctls": [["sysctl a=0", ""]]},
            "files": {"files": []}}
    after_check = {"host": {"links": [["link lo", "lo"], ["link leak0", "leak0"]], "iptables": []},
                   "template": {"sysctls": [["sysctl a=0", ""]]}, "files": {"files": []}}
    final = {
        "host": {"links": [["link lo", "lo"], ["link leak0", "leak0"], ["link br0", "br0"]],
                 "iptables": [["iptables :CNI-HOSTPORT-DNAT - [0:0]", ""],
                              ["iptables -A CNI-DN-1 -m comment --comment \"id: conformanceabc1c7\" -j DNAT", ""],
                              ["iptables -A CNI-DN-2 -d 10.78.0.12/32 -j DNAT", ""]]},
        "template": {"sysctls": [["sysctl a=1", ""]]},
        "files": {"files": [["file /d/ipam/lock", "x"], ["file /d/ipam/10.78.0.12", "y"], ["file /d/state.json", "z"]]},
    }
    contents = {"/d/state.json": "conformanceabc1c3 eth0"}
    v = judge(base, final, [("warm-up", base), ("result-schema[1.0.0]", after_check), ("latency", final)],
              host_ifaces={"br0"}, cid_prefix="conformanceabc1c", addresses={"10.78.0.12"}, read=lambda p: contents.get(p, ""))
    leaked = {(x.where, x.change, x.item): x.first_seen for x in v.leaks}
    kept = {x.item for x in v.kept}
    assert leaked[("host", "added", "link leak0")] == "result-schema[1.0.0]"
    assert ("template", "removed", "sysctl a=0") in leaked and ("template", "added", "sysctl a=1") in leaked
    assert ("files", "added", "file /d/ipam/10.78.0.12") in leaked  # named after an address it handed out
    assert ("files", "added", "file /d/state.json") in leaked  # names a container of the run
    assert ("host", "added", 'iptables -A CNI-DN-1 -m comment --comment "id: conformanceabc1c7" -j DNAT') in leaked
    assert ("host", "added", "iptables -A CNI-DN-2 -d 10.78.0.12/32 -j DNAT") in leaked
    assert kept == {"link br0", "iptables :CNI-HOSTPORT-DNAT - [0:0]", "file /d/ipam/lock"}
