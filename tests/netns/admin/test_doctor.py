"""``multinic doctor`` on a healthy install and on deliberately broken ones: each break is one FAIL (or WARN) line
naming the fix, and any FAIL makes the exit status 1. Thick mode runs the real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netns.admin.conftest import MULTINIC, Node, jwt


def checks(node: Node, *args: str, **kw: Any) -> tuple[int, dict[str, dict[str, str]]]:
    rc, doc = node.run_json("doctor", *args, **kw)
    return rc, {c["check"]: c for c in doc}


def test_a_healthy_thin_install_is_all_ok(node: Node) -> None:
    node.add_pod("web", "mv")
    rc, got = checks(node)
    assert rc == 0, got
    assert {k: v["status"] for k, v in got.items() if v["status"] != "OK"} == {}
    for name in ("conf", "conf first", "cluster network", "binary", "plugins", "kubeconfig", "token", "API", "RBAC",
                 "log file", "cache dir"):
        assert name in got, name
    assert "expires in" in got["token"]["detail"]
    rc, out, _ = node.run("doctor")
    assert rc == 0 and out.splitlines()[0].startswith("OK ") and "0 FAIL, 0 WARN" in out


def test_conf_not_first_fails(node: Node) -> None:
    node.write_conf({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "bridge"}]}, "00-aaa.conflist")
    rc, got = checks(node)
    assert rc == 1
    assert got["conf first"]["status"] == "FAIL" and "00-aaa.conflist" in got["conf first"]["detail"]
    assert "rename 00-multinic.conflist" in got["conf first"]["fix"]


def test_invalid_conf_is_a_fail_line_not_a_crash(node: Node) -> None:
    node.conf_path.write_text('{"cniVersion": "1.0.0", "plugins": [{"type": "multinic", ')
    rc, got = checks(node)
    assert rc == 1 and got["conf"]["status"] == "FAIL" and "not valid JSON" in got["conf"]["detail"]


def test_missing_plugin_binaries_and_links(node: Node) -> None:
    doc = json.loads(node.conf_path.read_text())
    doc["plugins"][0]["delegates"][0]["plugins"].append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    node.write_conf(doc)
    assert checks(node)[0] == 0
    os.unlink(node.bin / "bandwidth")  # not built in: ADD of the cluster network would fail
    os.unlink(node.bin / "bridge")  # built in: only direct execs fail
    rc, got = checks(node)
    assert rc == 1
    assert got["plugins"]["status"] == "FAIL" and "missing: bandwidth" in got["plugins"]["detail"]
    assert got["plugin links"]["status"] == "WARN" and "bridge" in got["plugin links"]["detail"]
    assert "--plugin-links missing" in got["plugin links"]["fix"]


def test_expired_token_fails_with_its_expiry_and_the_api_says_401(node: Node) -> None:
    expired = jwt(time.time() - 3 * 3600 - 60)
    token_file = node.tmp / "token"
    token_file.write_text(expired)  # the API double does not accept it, as a real API server would not
    rc, got = checks(node)
    assert rc == 1
    assert got["token"]["status"] == "FAIL" and got["token"]["detail"].startswith("expired 3h ago")
    assert "tokenFile" in got["token"]["fix"]
    assert got["API"]["status"] == "FAIL" and "401" in got["API"]["detail"]


def test_rbac_missing_one_verb_names_it(node: Node) -> None:
    node.api.deny("update", "pods/status")
    rc, got = checks(node)
    assert rc == 1
    assert got["RBAC"]["status"] == "FAIL"
    assert got["RBAC"]["detail"] == "not allowed: update pods/status"
    assert "rbac.yaml" in got["RBAC"]["fix"]
    # Asked honestly: one SelfSubjectAccessReview per permission, nothing stored.
    reviews = node.api.requests_for("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert len(reviews) >= 17
    assert node.api.objects("selfsubjectaccessreviews", "authorization.k8s.io/v1") == []


def test_readiness_indicator_missing_and_log_not_writable(node: Node) -> None:
    doc = json.loads(node.conf_path.read_text())
    doc["plugins"][0]["readinessindicatorfile"] = str(node.tmp / "ready")
    doc["plugins"][0]["logFile"] = "/proc/multinic.log"
    doc["plugins"][0]["logOptions"] = {"maxSize": 0}
    node.write_conf(doc)
    rc, got = checks(node)
    assert rc == 1
    assert got["readiness file"]["status"] == "FAIL"
    assert got["log file"]["status"] == "FAIL" and "cannot create files in /proc" in got["log file"]["detail"]
    (node.tmp / "ready").write_text("")
    doc["plugins"][0]["logFile"] = str(node.log_file)
    node.write_conf(doc)
    rc, got = checks(node)
    assert got["readiness file"]["status"] == "OK"
    assert got["log file"]["status"] == "WARN" and "never rotated" in got["log file"]["detail"]


def test_state_dir_modes(node: Node) -> None:
    node.add_pod("web")
    os.chmod(node.cni_dir, 0o777)
    rc, got = checks(node)
    assert rc == 1 and got["cache dir"]["status"] == "FAIL" and "chmod 0700" in got["cache dir"]["fix"]
    os.chmod(node.cni_dir, 0o700)
    assert checks(node)[1]["cache dir"]["status"] == "OK"


# ---- thick mode: the real daemon ---------------------------------------------------------------------------------


@pytest.fixture
def daemon(node: Node) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    sock = str(node.tmp / "run" / "multinic.sock")
    proc = subprocess.Popen([MULTINIC, "daemon", "--socket", sock], stderr=subprocess.DEVNULL,
                            env={k: v for k, v in os.environ.items() if not k.startswith("CNI_")})
    try:
        deadline = time.monotonic() + 60
        from cni.admin.doctor import unix_get

        while True:
            try:
                if unix_get(sock, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.2)
        doc = json.loads(node.conf_path.read_text())
        doc["plugins"][0]["type"] = "multinic-shim"
        node.write_conf(doc)
        yield sock, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_thick_mode_daemon_ready_and_versions_match(node: Node, daemon: tuple[str, Any]) -> None:
    sock, _ = daemon
    rc, got = checks(node, "--socket", sock)
    assert rc == 0, got
    assert got["daemon"]["status"] == "OK" and "HTTP 200" in got["daemon"]["detail"]
    from cni import __version__

    assert got["versions"]["status"] == "OK" and __version__ in got["versions"]["detail"]
    assert got["socket"]["status"] == "OK"


def test_thick_mode_daemon_down_fails(node: Node, daemon: tuple[str, Any]) -> None:
    sock, proc = daemon
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    rc, got = checks(node, "--socket", sock)
    assert rc == 1
    assert got["daemon"]["status"] == "FAIL" and "not reachable" in got["daemon"]["detail"]


def test_thick_mode_shim_of_another_version_fails(node: Node, daemon: tuple[str, Any]) -> None:
    sock, _ = daemon
    old = node.tmp / "old-shim"
    old.write_text(f"#!{sys.executable}\nprint('multinic-shim 0.0.9')\n")
    old.chmod(0o755)
    os.unlink(node.bin / "multinic-shim")
    os.symlink(old, node.bin / "multinic-shim")
    rc, got = checks(node, "--socket", sock)
    assert rc == 1
    assert got["versions"]["status"] == "FAIL" and "shim 0.0.9 but daemon" in got["versions"]["detail"]


# ---- the client certificate and the tenancy settings ---------------------------------------------------------------


def _cert_kubeconfig(node: Node, not_before: float, not_after: float, name: str, *, embed: bool) -> str:
    """A kubeconfig that authenticates to the API double with a certificate its CA signed, valid as given."""
    import base64

    import yaml

    from tests.support.certs import make_client_cert

    crt, key = make_client_cert(node.tmp, node.api.pki.ca_cert, node.api.pki.ca_key, not_before, not_after, name)
    doc = yaml.safe_load(open(node.api.kubeconfig_path(client_cert=True, name=f"kc-{name}")).read())
    user = doc["users"][0]["user"]
    if embed:
        user.pop("client-certificate"), user.pop("client-key")
        user["client-certificate-data"] = base64.b64encode(crt.read_bytes()).decode()
        user["client-key-data"] = base64.b64encode(key.read_bytes()).decode()
    else:
        user["client-certificate"], user["client-key"] = str(crt), str(key)
    path = node.tmp / f"kc-{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("embed", [False, True], ids=["file", "data"])
def test_client_certificate_expiry(node: Node, embed: bool) -> None:
    now, day = time.time(), 86400.0
    for name, (nb, na), status in (("fine", (now - day, now + 30 * day), "OK"),
                                   ("near", (now - day, now + 2 * day), "WARN"),
                                   ("expired", (now - 9 * day, now - 3 * day), "FAIL")):
        node.write_conf(node.conf(kubeconfig=_cert_kubeconfig(node, nb, na, name, embed=embed)))
        rc, got = checks(node)
        cert = got["client cert"]
        assert cert["status"] == status, (name, cert)
        assert ("client-certificate-data" in cert["detail"]) == embed
        if status == "FAIL":
            assert rc == 1 and cert["detail"].split(": ", 1)[1].startswith("expired 3d ago")
            # The API server refuses it, as the check says it will.
            assert got["API"]["status"] == "FAIL"
        else:
            assert got["API"]["status"] == "OK", got["API"]
            assert got["token"]["detail"] == "no bearer token (client certificate)"
            assert rc == 0, {k: v for k, v in got.items() if v["status"] == "FAIL"}
        if status == "WARN":
            assert "expires in 47h" in cert["detail"] and "new client certificate" in cert["fix"]


def test_permissive_tenancy_settings_are_warned_with_the_fix(node: Node) -> None:
    rc, doc = node.run_json("doctor")
    assert [c for c in doc if c["check"] == "tenancy"] == [
        {"check": "tenancy", "status": "OK", "detail": "pod annotations and tenant NADs are confined "
                                                       "(no permissive setting)", "fix": ""}]
    node.write_conf(node.conf(hostPortPolicy=[{"ports": "1-65535"}], allowedPaths=["/var/lib/cni", "/etc"],
                              hostNetworkChanges=["ipMasq"], multinicPolicy={"platform": "trusted"}))
    rc, doc = node.run_json("doctor")
    warned = [c for c in doc if c["check"] == "tenancy"]
    assert all(c["status"] == "WARN" and "Security model" in c["fix"] for c in warned)
    details = sorted(c["detail"] for c in warned)
    assert any("hostPortPolicy allows 1-65535" in d and "22" in d for d in details), details
    assert any("allowedPaths includes /etc" in d for d in details), details
    assert any("hostNetworkChanges allows ipMasq" in d for d in details), details
    assert any("namespace platform is trusted" in d for d in details), details
    assert len(warned) == 4 and rc == 0  # warnings, not failures
