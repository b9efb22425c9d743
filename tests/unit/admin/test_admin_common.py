"""The admin tools' shared parts without a kernel: finding the conf, bad input and its exit codes, states, output."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from cni.admin import common as c
from cni.admin import doctor, inspect, leaks, logs, status
from cni.delegator import cache
from cni.delegator.plan import Attachment
from cni.spec.config import conflist_from

PRIMARY = {"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge",
           "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}


def conflist(**plugin: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "multinic-cni-network",
            "plugins": [{"type": "multinic", "delegates": [PRIMARY], **plugin}]}


def run(mod: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = c.run("x", mod._main, list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_the_first_multinic_conf_in_the_directory_is_found_and_gets_the_lists_name(tmp_path: Path) -> None:
    (tmp_path / "10-bridge.conf").write_text(json.dumps(PRIMARY))
    (tmp_path / "00-broken.conflist").write_text("{not json")
    (tmp_path / "05-multinic.conflist").write_text(json.dumps(conflist(cniDir=str(tmp_path / "cache"))))
    (tmp_path / "99-multinic-too.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "multinic"}))
    node = c.load(str(tmp_path))
    assert node.path == str(tmp_path / "05-multinic.conflist")
    assert node.raw["name"] == "multinic-cni-network" and node.raw["cniVersion"] == "1.0.0"
    assert node.cfg.cni_dir == str(tmp_path / "cache") and node.conf_dir == str(tmp_path) and not node.thick


@pytest.mark.parametrize("content, message", [
    (None, "no such file or directory"),
    ("{oops", "is not valid JSON"),
    (json.dumps(PRIMARY), "is not a multinic conf"),
    (json.dumps(conflist(cniDir="relative/dir")), "invalid multinic conf"),
])
def test_a_bad_conf_is_exit_3_with_a_clear_message(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "multinic.conflist"
    if content is not None:
        path.write_text(content)
    for mod in (status, leaks, logs):
        rc, out, err = run(mod, "--conf", str(path))
        assert (rc, out) == (3, ""), err
        assert message in err and err.startswith("multinic x: ")


def test_a_directory_without_multinic_conf_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "10-bridge.conf").write_text(json.dumps(PRIMARY))
    rc, _, err = run(status, "--conf", str(tmp_path))
    assert rc == 3 and "no multinic conf in" in err


@pytest.mark.parametrize("argv, message", [
    (["-o", "yaml"], "invalid choice: 'yaml'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_usage_is_exit_2(argv: list[str], message: str) -> None:
    for mod in (status, doctor, leaks, logs):
        rc, out, err = run(mod, *argv)
        assert rc == 2 and not out and message in err and "usage: multinic" in err


@pytest.mark.parametrize("pod", ["Default/web", "a/b/c", "web!", "/web"])
def test_a_malformed_pod_name_is_exit_2(tmp_path: Path, pod: str) -> None:
    (tmp_path / "m.conflist").write_text(json.dumps(conflist(cniDir=str(tmp_path / "cache"))))
    for mod in (inspect, logs):
        rc, _, err = run(mod, pod, "--conf", str(tmp_path / "m.conflist"))
        assert rc == 2 and "NAMESPACE/POD" in err


def test_doctor_on_a_missing_conf_path_is_exit_3(tmp_path: Path) -> None:
    rc, _, err = run(doctor, "--conf", str(tmp_path / "nope.conflist"))
    assert rc == 3 and "no such file" in err


def test_logs_tail_must_not_be_negative(tmp_path: Path) -> None:
    rc, _, err = run(logs, "-n", "-1")
    assert rc == 2 and "--tail" in err


def entries(*states: str) -> list[cache.Entry]:
    cl = conflist_from(PRIMARY)
    return [cache.Entry(Attachment(i, f"net{i}", f"n{i}", cl), s) for i, s in enumerate(states)]


@pytest.mark.parametrize("states, each, whole", [
    (("added", "added"), ["added", "added"], "added"),
    (("added", "planned"), ["added", "pending"], "pending"),  # an ADD still running
    (("planned", "failed", "planned"), ["removed", "failed", "removed"], "failed"),  # rolled back
    (("planned", "added"), ["removed", "added"], "partially removed"),  # a rollback whose DEL of net1 failed
    (("planned", "planned"), ["pending", "pending"], "pending"),
])
def test_attachment_and_sandbox_states_from_the_cache(states: tuple[str, ...], each: list[str], whole: str) -> None:
    es = entries(*states)
    assert [c.attachment_state(es, i) for i in range(len(es))] == each
    assert c.sandbox_state(es) == whole


def test_an_unreadable_record_is_listed_with_its_problem_and_a_file_netns_is_not_alive(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    cache.save(str(d), cache.Record("cid1", str(tmp_path / "fake-netns"), "default", "web", "u1", entries("added")))
    (tmp_path / "fake-netns").write_text("")  # a file is not a namespace (what a reboot leaves on disk)
    (d / "cid2").write_text("garbage\n")
    boxes = {b.record.container_id: b for b in c.sandboxes(str(d))}
    assert not boxes["cid1"].netns_alive and any("is gone" in p for p in boxes["cid1"].problems)
    assert boxes["cid2"].problems  # damaged: named, not hidden
    assert c.netns_alive("/proc/self/ns/net")


def test_table_and_age() -> None:
    assert c.table(["A", "BB"], [["x", "y"], ["long", ""]]) == "A     BB\nx     y\nlong\n"
    assert [c.age(s) for s in (5, 119, 120, 7199, 7200, 172800)] == ["5s", "119s", "2m", "119m", "2h", "2d"]


def test_log_line_parts() -> None:
    assert logs.parse_line("2026-01-01T00:00:00Z [error] [ns/p/u:net]: boom") == {
        "time": "2026-01-01T00:00:00Z", "level": "error", "message": "[ns/p/u:net]: boom"}
    assert logs.parse_line("free text")["message"] == "free text"
    m = logs.pod_matcher("default", "web", ["cid9"])
    assert m("x Add: default:web:uid:net(n):net1 {}") and m("x [default/web/uid]: e") and m("x Del of cid9")
    assert not m("x Add: default:web2:uid:net(n):net1 {}")


def test_state_that_cannot_be_read_is_a_message_and_exit_1_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    (tmp_path / "m.conflist").write_text(json.dumps(conflist(cniDir=str(tmp_path / "cache"))))
    for mod in (status, leaks):
        rc, out, err = run(mod, "--conf", str(tmp_path / "m.conflist"))
        assert rc == 1 and not out and "Not a directory" in err and "Traceback" not in err
