"""cni.invoke against tiny fake external plugins (shell scripts in tmp_path acting as CNI binaries).

No root: the fakes only record what they were given (argv[0], env, stdin) and answer what the
test told them to.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from cni import invoke
from cni.plugin import Plugin
from cni.spec import errors as E
from cni.spec.config import ConfList, conflist_from
from cni.spec.request import Request
from cni.spec.result import Result, from_wire

FAKE = """#!/bin/sh
d="{dir}"
n="${{0##*/}}"
echo "$n $CNI_COMMAND" >> "$d/calls"
cat > "$d/$n.$CNI_COMMAND.stdin"
env > "$d/$n.$CNI_COMMAND.env"
[ -f "$d/$n.$CNI_COMMAND.stderr" ] && cat "$d/$n.$CNI_COMMAND.stderr" >&2
[ -f "$d/$n.$CNI_COMMAND.out" ] && cat "$d/$n.$CNI_COMMAND.out"
[ -f "$d/$n.$CNI_COMMAND.sleep" ] && sleep "$(cat "$d/$n.$CNI_COMMAND.sleep")"
[ -f "$d/$n.$CNI_COMMAND.rc" ] && exit "$(cat "$d/$n.$CNI_COMMAND.rc")"
exit 0
"""


def _res(version: str, ip: str, iface: str) -> dict[str, Any]:
    return {"cniVersion": version, "interfaces": [{"name": iface}], "ips": [{"interface": 0, "address": ip}], "dns": {}}


class Fakes:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir()
        self.state.mkdir()

    def make(self, *names: str) -> None:
        for name in names:
            p = self.bin / name
            p.write_text(FAKE.format(dir=self.state))
            p.chmod(0o755)

    def on(self, name: str, cmd: str, *, out: Any = None, rc: int | None = None, stderr: str | None = None, sleep: float | None = None) -> None:
        if out is not None:
            (self.state / f"{name}.{cmd}.out").write_text(out if isinstance(out, str) else json.dumps(out))
        if rc is not None:
            (self.state / f"{name}.{cmd}.rc").write_text(str(rc))
        if stderr is not None:
            (self.state / f"{name}.{cmd}.stderr").write_text(stderr)
        if sleep is not None:
            (self.state / f"{name}.{cmd}.sleep").write_text(str(sleep))

    def calls(self) -> list[str]:
        p = self.state / "calls"
        return p.read_text().splitlines() if p.exists() else []

    def stdin(self, name: str, cmd: str) -> dict[str, Any]:
        return json.loads((self.state / f"{name}.{cmd}.stdin").read_text())  # type: ignore[no-any-return]

    def env(self, name: str, cmd: str) -> dict[str, str]:
        out = {}
        for line in (self.state / f"{name}.{cmd}.env").read_text().splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def req(self, command: str = "ADD", **config: Any) -> Request:
        return Request(
            command=command, container_id="cid-1", netns="/run/netns/podx", ifname="net1",
            cni_args={"IgnoreUnknown": "1", "K8S_POD_NAME": "web-0"}, path=("/nonexistent", str(self.bin)),
            config=config,
        )


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


# ---- find_in_path ---------------------------------------------------------------------


def test_find_in_path_not_found_names_type_and_path(fakes: Fakes) -> None:
    with pytest.raises(E.NotFound) as ei:
        invoke.find_in_path("nosuch", ("/a", str(fakes.bin)))
    assert ei.value.code == 103
    assert "'nosuch'" in ei.value.msg and "/a" in ei.value.msg and str(fakes.bin) in ei.value.msg


@pytest.mark.parametrize("ptype", ["../x", "a/b", "/usr/bin/true", "", ".", ".."])
def test_find_in_path_refuses_path_like_types(fakes: Fakes, ptype: str) -> None:
    (fakes.bin.parent / "x").write_text("#!/bin/sh\n")
    (fakes.bin.parent / "x").chmod(0o755)
    with pytest.raises(E.NotFound, match="invalid plugin type"):
        invoke.find_in_path(ptype, (str(fakes.bin),))


def test_find_in_path_first_executable_wins(tmp_path: Path, fakes: Fakes) -> None:
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "p").write_text("not executable")
    (d2 / "p").write_text("#!/bin/sh\n")
    (d2 / "p").chmod(0o755)
    (d1 / "q").mkdir()  # a directory is not a plugin
    assert invoke.find_in_path("p", (str(d1), str(d2))) == str(d2 / "p")
    with pytest.raises(E.NotFound):
        invoke.find_in_path("q", (str(d1),))


# ---- exec: env, stdin, errors ---------------------------------------------------------


def test_exec_passes_cni_env_inherited_env_and_config_on_stdin(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    fakes.make("fake")
    fakes.on("fake", "ADD", out=_res("1.0.0", "10.1.0.2/24", "net1"))
    monkeypatch.setenv("MN_TEST_INHERITED", "yes")
    monkeypatch.setenv("CNI_IFNAME", "must-be-overridden")
    req = fakes.req(cniVersion="1.0.0", name="n", type="fake", custom={"k": [1, 2]})
    res = invoke.run(req)
    assert isinstance(res, Result) and str(res.ips[0].address) == "10.1.0.2/24"
    env = fakes.env("fake", "ADD")
    assert env["CNI_COMMAND"] == "ADD"
    assert env["CNI_CONTAINERID"] == "cid-1"
    assert env["CNI_NETNS"] == "/run/netns/podx"
    assert env["CNI_IFNAME"] == "net1"
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=web-0"
    assert env["CNI_PATH"] == f"/nonexistent:{fakes.bin}"
    assert env["MN_TEST_INHERITED"] == "yes"
    assert fakes.stdin("fake", "ADD") == req.config


def test_del_and_check_output_is_ignored(fakes: Fakes) -> None:
    fakes.make("fake")
    fakes.on("fake", "DEL", out="not json, but DEL has no result")
    assert invoke.run(fakes.req("DEL", cniVersion="1.0.0", name="n", type="fake")) is None


@pytest.mark.parametrize(("code", "cls"), [(7, E.InvalidConfig), (11, E.TryAgainLater), (3, E.UnknownContainer), (142, E.CNIError)])
def test_plugin_error_document_keeps_its_code(fakes: Fakes, code: int, cls: type) -> None:
    fakes.make("fake")
    fakes.on("fake", "ADD", out={"cniVersion": "1.0.0", "code": code, "msg": "plugin said no", "details": "because"}, rc=1)
    with pytest.raises(E.CNIError) as ei:
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="fake"))
    assert type(ei.value) is cls and ei.value.code == code
    assert (ei.value.msg, ei.value.details) == ("plugin said no", "because")


def test_plugin_error_without_details_gets_its_stderr(fakes: Fakes) -> None:
    fakes.make("fake")
    fakes.on("fake", "ADD", out={"code": 7, "msg": "bad master"}, rc=1, stderr="master eth9: no such device\n")
    with pytest.raises(E.InvalidConfig) as ei:
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="fake"))
    assert ei.value.details == "master eth9: no such device"


@pytest.mark.parametrize("out", ["panic: runtime error", "", '{"no": "code"}', "[1]"])
def test_failure_without_error_document_is_104_with_stderr(fakes: Fakes, out: str) -> None:
    fakes.make("fake")
    fakes.on("fake", "ADD", out=out, rc=2, stderr="goroutine 1 [running]: boom")
    with pytest.raises(E.ExternalPluginFailed) as ei:
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="fake"))
    assert ei.value.code == 104
    assert "exit status 2" in ei.value.msg and "ADD" in ei.value.msg
    assert "goroutine 1 [running]: boom" in ei.value.details


def test_success_with_garbage_result_is_104_with_stderr(fakes: Fakes) -> None:
    fakes.make("fake")
    fakes.on("fake", "ADD", out="hello, I am not JSON", stderr="debug: something odd")
    with pytest.raises(E.ExternalPluginFailed) as ei:
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="fake"))
    assert ei.value.code == 104 and "debug: something odd" in ei.value.details


def test_success_with_malformed_result_is_decode_failure(fakes: Fakes) -> None:
    fakes.make("fake")
    fakes.on("fake", "ADD", out={"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]})
    with pytest.raises(E.DecodeFailure):
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="fake"))


def test_timeout_is_error_11_and_kills_the_plugins_children(fakes: Fakes) -> None:
    fakes.make("slow")
    fakes.on("slow", "ADD", sleep=30)  # sh forks sleep: the child holds our stdout pipe
    t0 = time.monotonic()
    with pytest.raises(E.TryAgainLater) as ei:
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="slow"), timeout=0.5)
    assert ei.value.code == 11 and "timed out" in ei.value.msg
    assert time.monotonic() - t0 < 10


def test_unexecutable_binary_is_104(tmp_path: Path, fakes: Fakes) -> None:
    bad = fakes.bin / "broken"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    with pytest.raises(E.ExternalPluginFailed, match="cannot execute"):
        invoke.run(fakes.req(cniVersion="1.0.0", name="n", type="broken"))


def test_ipam_exec_result_and_garbage(fakes: Fakes) -> None:
    fakes.make("fake-ipam")
    fakes.on("fake-ipam", "ADD", out={"cniVersion": "1.0.0", "ips": [{"address": "10.5.0.9/16", "gateway": "10.5.0.1"}], "dns": {}})
    req = fakes.req(cniVersion="1.0.0", name="n", type="fake-main", ipam={"type": "fake-ipam", "subnet": "10.5.0.0/16"})
    res = invoke.ipam(req)
    assert res is not None and str(res.ips[0].address) == "10.5.0.9/16"
    assert fakes.stdin("fake-ipam", "ADD") == req.config, "IPAM gets the whole plugin config (libcni ipam.ExecAdd)"
    assert invoke.ipam(req.with_(command="DEL")) is None
    fakes.on("fake-ipam", "ADD", out="garbage")
    with pytest.raises(E.ExternalPluginFailed):
        invoke.ipam(req)
    with pytest.raises(E.InvalidConfig, match="ipam.type"):
        invoke.ipam(fakes.req(cniVersion="1.0.0", name="n", type="x", ipam={}))


def test_forced_exec_type_is_looked_up_in_path(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoke, "_force_exec", {"static"})
    assert invoke.native("static") is None
    fakes.make("static")
    fakes.on("static", "ADD", out={"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.1/24"}]})
    res = invoke.ipam(fakes.req(cniVersion="1.0.0", name="n", type="x", ipam={"type": "static"}))
    assert res is not None and fakes.calls() == ["static ADD"]


# ---- conflists -------------------------------------------------------------------------


def _list(version: str, *types_: str, **extra: Any) -> ConfList:
    return conflist_from({"cniVersion": version, "name": "chain", "plugins": [{"type": t, "tag": t} for t in types_], **extra})


def test_add_list_chains_prev_result_in_order(fakes: Fakes) -> None:
    fakes.make("pa", "pb", "pc")
    fakes.on("pa", "ADD", out=_res("1.0.0", "10.0.0.2/24", "net1"))
    fakes.on("pb", "ADD", out=_res("1.0.0", "10.0.0.3/24", "net1"))
    fakes.on("pc", "ADD", out=_res("1.0.0", "10.0.0.4/24", "net1"))
    res = invoke.add_list(fakes.req(), _list("1.0.0", "pa", "pb", "pc"))
    assert fakes.calls() == ["pa ADD", "pb ADD", "pc ADD"]
    assert "prevResult" not in fakes.stdin("pa", "ADD")
    assert fakes.stdin("pb", "ADD")["prevResult"]["ips"][0]["address"] == "10.0.0.2/24"
    assert fakes.stdin("pc", "ADD")["prevResult"]["ips"][0]["address"] == "10.0.0.3/24"
    assert fakes.stdin("pb", "ADD")["name"] == "chain" and fakes.stdin("pb", "ADD")["tag"] == "pb"
    assert str(res.ips[0].address) == "10.0.0.4/24" and res.cni_version == "1.0.0"


def test_add_list_prev_result_has_list_version_shape(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    fakes.on("pa", "ADD", out=_res("1.0.0", "10.0.0.2/24", "net1"))  # a plugin answering in another version
    fakes.on("pb", "ADD", out={"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]})
    res = invoke.add_list(fakes.req(), _list("0.4.0", "pa", "pb"))
    prev = fakes.stdin("pb", "ADD")["prevResult"]
    assert prev["cniVersion"] == "0.4.0" and prev["ips"][0]["version"] == "4"
    assert res.cni_version == "0.4.0"


def test_add_list_rolls_back_in_reverse_on_failure(fakes: Fakes) -> None:
    fakes.make("pa", "pb", "pc")
    fakes.on("pa", "ADD", out=_res("1.0.0", "10.0.0.2/24", "net1"))
    fakes.on("pb", "ADD", out=_res("1.0.0", "10.0.0.3/24", "net1"))
    fakes.on("pc", "ADD", out={"code": 7, "msg": "pc refuses"}, rc=1)
    with pytest.raises(E.InvalidConfig, match="pc refuses"):
        invoke.add_list(fakes.req(), _list("1.0.0", "pa", "pb", "pc"))
    assert fakes.calls() == ["pa ADD", "pb ADD", "pc ADD", "pb DEL", "pa DEL"]
    assert fakes.stdin("pa", "DEL")["prevResult"]["ips"][0]["address"] == "10.0.0.3/24"


def test_add_list_rollback_failure_does_not_hide_the_cause(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    fakes.on("pa", "ADD", out=_res("0.3.1", "10.0.0.2/24", "net1"))
    fakes.on("pa", "DEL", rc=1, out="crash")
    fakes.on("pb", "ADD", out={"code": 11, "msg": "busy"}, rc=1)
    with pytest.raises(E.TryAgainLater, match="busy"):
        invoke.add_list(fakes.req(), _list("0.3.1", "pa", "pb"))
    assert fakes.calls() == ["pa ADD", "pb ADD", "pa DEL"]
    assert "prevResult" not in fakes.stdin("pa", "DEL"), "no prevResult on DEL below 0.4.0 (libcni)"


def test_add_list_rolls_back_when_a_native_plugin_has_a_bug(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy_add(req: Request, conf: Any) -> Result:
        raise ZeroDivisionError("bug")

    mod = types.ModuleType("mn_test_buggy_native")
    mod.PLUGIN = Plugin("buggy", lambda r: None, buggy_add, lambda r, c: None, lambda r, c: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mn_test_buggy_native", mod)
    monkeypatch.setitem(invoke.NATIVE, "buggy", "mn_test_buggy_native")
    fakes.make("pa")
    fakes.on("pa", "ADD", out=_res("1.0.0", "10.0.0.2/24", "net1"))
    with pytest.raises(ZeroDivisionError):
        invoke.add_list(fakes.req(), _list("1.0.0", "pa", "buggy"))
    assert fakes.calls() == ["pa ADD", "pa DEL"]


def test_del_list_reverse_continues_past_failures_and_reports_all(fakes: Fakes) -> None:
    fakes.make("pa", "pb", "pc")
    fakes.on("pc", "DEL", out={"code": 7, "msg": "pc broken"}, rc=1)
    fakes.on("pb", "DEL", out="segfault", rc=139, stderr="pb crashed")
    prev = from_wire(_res("1.0.0", "10.0.0.9/24", "net1"))
    with pytest.raises(E.CNIError) as ei:
        invoke.del_list(fakes.req("DEL"), _list("1.0.0", "pa", "pb", "pc"), prev)
    assert fakes.calls() == ["pc DEL", "pb DEL", "pa DEL"]
    assert ei.value.code == 7
    assert "plugin pc: pc broken" in ei.value.details and "plugin pb:" in ei.value.details and "pb crashed" in ei.value.details
    for p in ("pa", "pb", "pc"):
        assert fakes.stdin(p, "DEL")["prevResult"]["ips"][0]["address"] == "10.0.0.9/24"


def test_del_list_survives_a_native_plugin_bug(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy_del(req: Request, conf: Any) -> None:
        raise AttributeError("bug in DEL")

    mod = types.ModuleType("mn_test_buggy_del")
    mod.PLUGIN = Plugin("buggydel", lambda r: None, lambda r, c: Result(), buggy_del, lambda r, c: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mn_test_buggy_del", mod)
    monkeypatch.setitem(invoke.NATIVE, "buggydel", "mn_test_buggy_del")
    fakes.make("pa")
    with pytest.raises(E.InternalError) as ei:
        invoke.del_list(fakes.req("DEL"), _list("1.0.0", "pa", "buggydel"), None)
    assert ei.value.code == 999 and "AttributeError" in ei.value.msg
    assert fakes.calls() == ["pa DEL"], "the bug in one plugin must not skip the other DELs"


def test_del_list_below_0_4_0_sends_no_prev_result(fakes: Fakes) -> None:
    fakes.make("pa")
    invoke.del_list(fakes.req("DEL"), _list("0.3.1", "pa"), from_wire(_res("0.3.1", "10.0.0.9/24", "net1")))
    assert "prevResult" not in fakes.stdin("pa", "DEL")


def test_del_list_single_failure_is_raised_as_is(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    fakes.on("pa", "DEL", out={"code": 3, "msg": "gone"}, rc=1)
    with pytest.raises(E.UnknownContainer, match="plugin pa: gone"):
        invoke.del_list(fakes.req("DEL"), _list("1.0.0", "pa", "pb"), None)


def test_check_list_in_order_with_prev_result_and_disable_check(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    prev = from_wire(_res("1.0.0", "10.0.0.9/24", "net1"))
    invoke.check_list(fakes.req("CHECK"), _list("1.0.0", "pa", "pb", disableCheck=True), prev)
    assert fakes.calls() == []
    invoke.check_list(fakes.req("CHECK"), _list("1.0.0", "pa", "pb"), prev)
    assert fakes.calls() == ["pa CHECK", "pb CHECK"]
    assert fakes.stdin("pb", "CHECK")["prevResult"]["ips"][0]["address"] == "10.0.0.9/24"


def test_check_list_stops_at_first_failure(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    fakes.on("pa", "CHECK", out={"code": 106, "msg": "address missing"}, rc=1)
    with pytest.raises(E.CNIError, match="address missing"):
        invoke.check_list(fakes.req("CHECK"), _list("1.0.0", "pa", "pb"), None)
    assert fakes.calls() == ["pa CHECK"]


def test_gc_list_sends_both_key_names(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    valid = [{"containerID": "cid-1", "ifname": "net1"}, {"containerID": "cid-2", "ifname": "eth0"}]
    invoke.gc_list(fakes.req("GC"), _list("1.1.0", "pa", "pb"), valid)
    assert fakes.calls() == ["pa GC", "pb GC"]
    for p in ("pa", "pb"):
        conf = fakes.stdin(p, "GC")
        assert conf["cni.dev/valid-attachments"] == valid
        assert conf["cni.dev/attachments"] == valid
        assert "prevResult" not in conf


def test_gc_list_continues_past_failure_and_honours_disable_gc(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    fakes.on("pa", "GC", out={"code": 5, "msg": "store down"}, rc=1)
    with pytest.raises(E.IOFailure):
        invoke.gc_list(fakes.req("GC"), _list("1.1.0", "pa", "pb"), [])
    assert fakes.calls() == ["pa GC", "pb GC"]
    invoke.gc_list(fakes.req("GC"), _list("1.1.0", "pa", "pb", disableGC=True), [])
    assert fakes.calls() == ["pa GC", "pb GC"]


def test_status_list_runs_every_plugin(fakes: Fakes) -> None:
    fakes.make("pa", "pb")
    invoke.status_list(fakes.req("STATUS"), _list("1.1.0", "pa", "pb"))
    assert fakes.calls() == ["pa STATUS", "pb STATUS"]


def test_raise_all_combines_messages() -> None:
    invoke.raise_all([])
    with pytest.raises(E.NotFound) as ei:
        invoke.raise_all([E.NotFound("a"), E.IOFailure("b", "c")])
    assert ei.value.code == 103 and ei.value.details == "a; b: c"


def test_an_interface_plugin_named_as_ipam_is_refused_not_recursed() -> None:
    from cni import invoke
    from cni.spec.errors import InvalidConfig
    from cni.spec.request import Request

    req = Request("DEL", "c", "", "net1", config={"cniVersion": "1.0.0", "name": "n", "type": "macvlan",
                                                  "ipam": {"type": "bridge"}})
    with pytest.raises(InvalidConfig, match="not an IPAM plugin"):
        invoke.ipam(req)


def test_cache_write_failure_is_code_5_not_999(tmp_path: Any) -> None:
    from cni.delegator import cache
    from cni.spec.errors import IOFailure

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(IOFailure):
        cache.save(str(not_a_dir), cache.Record("cid"))
