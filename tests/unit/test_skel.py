"""cni.skel.dispatch: env + stdin → one handler call → exactly one JSON document on stdout.

No root and no process boundary: every stream is a BytesIO/StringIO.
"""

from __future__ import annotations

import io
import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest

from cni import skel
from cni.spec import errors as E
from cni.spec import versions
from cni.spec.request import Request
from cni.spec.result import Interface, IPConfig, Result

ENV_ADD = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/run/netns/pod",
    "CNI_IFNAME": "net1",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-0",
}


def _conf(version: str = "1.0.0", **extra: Any) -> bytes:
    return json.dumps({"cniVersion": version, "name": "net", "type": "x", **extra}).encode()


def _result() -> Result:
    return Result(
        interfaces=(Interface("net1", mac="0a:58:00:00:00:01", sandbox="/run/netns/pod", mtu=1400),),
        ips=(IPConfig(ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_address("10.0.0.1"), 0),),
    )


class Call:
    def __init__(self, handler: Callable[[Request], Any] | None = None) -> None:
        self.requests: list[Request] = []
        self.handler = handler

    def __call__(self, req: Request) -> Any:
        self.requests.append(req)
        if self.handler is not None:
            return self.handler(req)
        return _result() if req.command == "ADD" else None


def run(env: dict[str, str], stdin: bytes, handler: Callable[[Request], Any] | None = None, **kw: Any) -> tuple[int, bytes, str, Call]:
    call = Call(handler)
    out, err = io.BytesIO(), io.StringIO()
    rc = skel.dispatch(call, env, io.BytesIO(stdin), out, err, **kw)
    return rc, out.getvalue(), err.getvalue(), call


def one_doc(out: bytes) -> dict[str, Any]:
    """stdout must hold exactly one JSON document (and a newline)."""
    assert out.endswith(b"\n") and out.count(b"\n") == 1, out
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def error_of(env: dict[str, str], stdin: bytes, handler: Callable[[Request], Any] | None = None, **kw: Any) -> dict[str, Any]:
    rc, out, _, call = run(env, stdin, handler, **kw)
    assert rc != 0
    doc = one_doc(out)
    assert set(doc) <= {"cniVersion", "code", "msg", "details"}
    assert isinstance(doc["code"], int) and doc["msg"]
    return doc


# ---- VERSION -----------------------------------------------------------------------------


@pytest.mark.parametrize("stdin", [b"", _conf("0.4.0"), b"not json at all"])
def test_version_answer_shape(stdin: bytes) -> None:
    rc, out, _, call = run({"CNI_COMMAND": "VERSION"}, stdin)
    assert rc == 0
    assert one_doc(out) == {"cniVersion": "1.1.0", "supportedVersions": list(versions.ALL)}
    assert call.requests == [], "VERSION is answered by skel, not the plugin"


def test_version_answer_lists_what_the_plugin_supports() -> None:
    rc, out, _, _ = run({"CNI_COMMAND": "VERSION"}, b"", supported=("0.4.0", "1.0.0"))
    assert one_doc(out)["supportedVersions"] == ["0.4.0", "1.0.0"]


# ---- bad environment ---------------------------------------------------------------------


def test_missing_cni_command_is_error_4() -> None:
    env = dict(ENV_ADD)
    del env["CNI_COMMAND"]
    doc = error_of(env, _conf())
    assert doc["code"] == 4 and "CNI_COMMAND" in doc["msg"]


@pytest.mark.parametrize("cmd", ["add", "UPDATE", "ADD ", "DELETE"])
def test_unknown_command_is_error_4(cmd: str) -> None:
    doc = error_of({**ENV_ADD, "CNI_COMMAND": cmd}, _conf())
    assert doc["code"] == 4 and "unknown CNI_COMMAND" in doc["msg"]


@pytest.mark.parametrize("cmd", ["ADD", "CHECK"])
@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])
def test_add_and_check_need_their_env(cmd: str, var: str) -> None:
    env = {**ENV_ADD, "CNI_COMMAND": cmd}
    del env[var]
    doc = error_of(env, _conf())
    assert doc["code"] == 4 and var in doc["msg"]
    env[var] = ""  # empty counts as missing
    assert error_of(env, _conf())["code"] == 4


@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"])
def test_del_needs_its_env(var: str) -> None:
    env = {**ENV_ADD, "CNI_COMMAND": "DEL"}
    del env[var]
    assert error_of(env, _conf())["code"] == 4


def test_del_does_not_need_netns() -> None:
    env = {**ENV_ADD, "CNI_COMMAND": "DEL"}
    del env["CNI_NETNS"]
    rc, out, _, call = run(env, _conf())
    assert rc == 0 and out == b""
    assert call.requests[0].netns == ""


@pytest.mark.parametrize("ifname", ["a" * 16, "a/b", "a:b", "a b", ".", ".."])
def test_invalid_ifname_is_error_4(ifname: str) -> None:
    doc = error_of({**ENV_ADD, "CNI_IFNAME": ifname}, _conf())
    assert doc["code"] == 4 and "CNI_IFNAME" in doc["msg"]


@pytest.mark.parametrize("cid", ["../x", "-a", "a b", "a\n"])
def test_invalid_container_id_is_error_4(cid: str) -> None:
    assert error_of({**ENV_ADD, "CNI_CONTAINERID": cid}, _conf())["code"] == 4


def test_bad_cni_args_is_error_4() -> None:
    assert error_of({**ENV_ADD, "CNI_ARGS": "novalue"}, _conf())["code"] == 4


def test_request_carries_parsed_env() -> None:
    rc, _, _, call = run(ENV_ADD, _conf(extra_key=1))
    assert rc == 0
    req = call.requests[0]
    assert (req.command, req.container_id, req.netns, req.ifname) == ("ADD", "c0ffee", "/run/netns/pod", "net1")
    assert req.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert req.cni_args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web-0"}
    assert req.config["extra_key"] == 1


def test_status_and_gc_need_no_container_env() -> None:
    for cmd in ("STATUS", "GC"):
        rc, out, _, call = run({"CNI_COMMAND": cmd}, _conf("1.1.0"))
        assert rc == 0 and out == b"" and call.requests[0].command == cmd


# ---- bad config / versions ---------------------------------------------------------------


@pytest.mark.parametrize("stdin", [b"{", b"", b"[]", b"42", b"\x00\x01"])
def test_malformed_json_is_error_6(stdin: bytes) -> None:
    doc = error_of(ENV_ADD, stdin)
    assert doc["code"] == 6


@pytest.mark.parametrize("version", ["0.5.0", "2.0.0", "1.0", "v1.0.0", "1.0.0-rc1", "latest"])
def test_unknown_or_malformed_cni_version_is_error_1(version: str) -> None:
    rc, out, _, call = run(ENV_ADD, _conf(version))
    doc = one_doc(out)
    assert rc != 0 and doc["code"] == 1
    assert call.requests == []
    assert doc["cniVersion"] == "1.1.0"  # we cannot answer in a version we do not speak


def test_version_the_plugin_does_not_support_is_error_1() -> None:
    doc = error_of(ENV_ADD, _conf("0.3.1"), supported=("0.4.0", "1.0.0"))
    assert doc["code"] == 1 and "0.3.1" in doc["msg"]


def test_check_below_0_4_0_is_error_1() -> None:
    doc = error_of({**ENV_ADD, "CNI_COMMAND": "CHECK"}, _conf("0.3.1"))
    assert doc["code"] == 1 and doc["cniVersion"] == "0.3.1"


@pytest.mark.parametrize("cmd", ["STATUS", "GC"])
def test_status_and_gc_below_1_1_0_are_error_1(cmd: str) -> None:
    doc = error_of({**ENV_ADD, "CNI_COMMAND": cmd}, _conf("1.0.0"))
    assert doc["code"] == 1


def test_oversized_stdin_is_refused_before_the_handler() -> None:
    big = _conf(pad="x" * 2000)
    doc = error_of(ENV_ADD, big, max_stdin=1000)
    assert doc["code"] == 6 and "larger than 1000 bytes" in doc["msg"]
    rc, _, _, call = run(ENV_ADD, big, max_stdin=len(big))
    assert rc == 0 and len(call.requests) == 1


# ---- handler outcomes ----------------------------------------------------------------------


def test_cni_error_from_handler_keeps_code_and_config_version() -> None:
    def h(req: Request) -> None:
        raise E.CNIError("plugin specific", "more", code=142)

    doc = error_of(ENV_ADD, _conf("0.4.0"), h)
    assert doc == {"cniVersion": "0.4.0", "code": 142, "msg": "plugin specific", "details": "more"}


def test_foreign_exception_is_999_with_traceback_on_stderr_only() -> None:
    def h(req: Request) -> None:
        raise KeyError("secret-internal-thing")

    rc, out, err, _ = run(ENV_ADD, _conf(), h)
    doc = one_doc(out)
    assert rc != 0 and doc["code"] == 999
    assert "KeyError" in doc["msg"] and "bug" in doc["details"]
    assert b"Traceback" not in out and b"File \"" not in out
    assert "Traceback (most recent call last)" in err and "secret-internal-thing" in err


@pytest.mark.parametrize("version", versions.ALL)
def test_add_result_is_converted_to_the_config_version(version: str) -> None:
    rc, out, _, _ = run(ENV_ADD, _conf(version))
    doc = one_doc(out)
    assert rc == 0 and doc["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert doc["ip4"] == {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}
    else:
        assert doc["ips"][0]["address"] == "10.0.0.2/24"
        assert ("version" in doc["ips"][0]) is (version in ("0.3.0", "0.3.1", "0.4.0"))
        assert ("mtu" in doc["interfaces"][0]) is (version == "1.1.0")


def test_add_result_that_cannot_be_converted_is_error_1_single_doc() -> None:
    doc = error_of(ENV_ADD, _conf("0.2.0"), lambda req: Result(interfaces=(Interface("net1"),)))
    assert doc["code"] == 1


def test_add_without_result_is_999() -> None:
    assert error_of(ENV_ADD, _conf(), lambda req: None)["code"] == 999


@pytest.mark.parametrize(("cmd", "version"), [("DEL", "1.0.0"), ("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("GC", "1.1.0")])
def test_commands_without_output_print_nothing_on_success(cmd: str, version: str) -> None:
    rc, out, err, call = run({**ENV_ADD, "CNI_COMMAND": cmd}, _conf(version))
    assert (rc, out, err) == (0, b"", "")
    assert call.requests[0].command == cmd


@pytest.mark.parametrize(
    ("env", "stdin"),
    [
        ({}, b""),
        (ENV_ADD, b"{"),
        (ENV_ADD, _conf("9.9.9")),
        ({**ENV_ADD, "CNI_IFNAME": ""}, _conf()),
        ({**ENV_ADD, "CNI_COMMAND": "CHECK"}, _conf("0.1.0")),
    ],
)
def test_exactly_one_document_and_handler_not_called_on_bad_input(env: dict[str, str], stdin: bytes) -> None:
    rc, out, _, call = run(env, stdin)
    assert rc == 1
    one_doc(out)
    assert call.requests == []


def test_add_whose_result_cannot_be_converted_is_undone_by_a_del() -> None:
    calls: list[str] = []

    def handler(req: Any) -> Result:
        calls.append(req.command)
        return Result(interfaces=(Interface("net1"),))

    doc = error_of(ENV_ADD, _conf("0.2.0"), handler)
    assert doc["code"] == 1
    assert calls == ["ADD", "DEL"]


@pytest.mark.parametrize("already_logged,lines", [(False, 1), (True, 0)])
def test_an_error_is_logged_once(tmp_path: Any, already_logged: bool, lines: int) -> None:
    from cni import log
    from cni.spec.errors import InvalidConfig

    path = str(tmp_path / "multus.log")
    saved = (log.default.path, log.default.level)
    log.configure(path=path, level="error")
    try:
        def handler(req: Any) -> Result:
            err = InvalidConfig("[ns/pod/uid]: boom")
            err.logged = already_logged
            raise err

        assert error_of(ENV_ADD, _conf(), handler)["code"] == 7
    finally:
        log.default.path, log.default.level = saved
    text = open(path).read() if lines else ""
    assert text.count("boom") == lines
