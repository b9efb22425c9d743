"""policyProfiles selected by a Namespace's ``multinic.io/policy`` label: the pure choice (cni.delegator.tenancy),
what the Guard reads and logs (cni.delegator.tenancy_io, with a source double), and the webhook's same choice."""

from __future__ import annotations

from typing import Any

import pytest

from cni.delegator import config as cfgmod
from cni.delegator import tenancy as T
from cni.delegator import tenancy_io
from cni.k8s.errors import ApiUnavailable
from cni.spec.errors import InvalidConfig, PolicyDenied

PORTS = [{"hostPort": 31000, "containerPort": 80, "protocol": "tcp"}]
DOC: dict[str, Any] = {
    "policyProfiles": {"ports": {"hostPortPolicy": [{"ports": "30000-32767", "protocols": ["tcp"]}]},
                       "platform": "trusted"},
    "multinicPolicy": {"pinned": {"allowedPaths": ["/srv/cni"]}},
}


def label(profile: str) -> dict[str, str]:
    return {T.PROFILE_LABEL: profile, "team": "x"}


def test_the_label_selects_the_profile_an_entry_wins_and_anything_else_is_the_node() -> None:
    ps = T.policies(DOC, "kube-system")
    assert ps.for_namespace("team-a", label("ports")).host_ports[0].first == 30000
    assert ps.for_namespace("team-a", label("platform")).trusted
    assert ps.for_namespace("pinned", label("platform")).allowed_paths == ("/srv/cni",)  # multinicPolicy wins
    assert ps.for_namespace("kube-system", label("ports")).trusted  # the multus namespace's own trust too
    for labels in (None, {}, label("nope"), {T.PROFILE_LABEL: 3}):
        got = ps.for_namespace("team-a", labels)  # type: ignore[arg-type]
        assert got.host_ports == () and not got.trusted and got.profile == "", labels
    assert ps.wants_labels("team-a") and not ps.wants_labels("pinned") and not ps.wants_labels("kube-system")
    assert not T.policies({}, "kube-system").wants_labels("team-a")  # no profiles: no API read at all


def test_refusals_name_the_profile_key_that_would_allow_more() -> None:
    doc = {"policyProfiles": {"ports": {"hostPortPolicy": [{"ports": "30000-30010"}]}}}
    pol = T.policies(doc).for_namespace("team-a", label("ports"))
    with pytest.raises(PolicyDenied) as e:
        T.check_host_ports([{"hostPort": 22, "containerPort": 22}], pol, "pod", "portMappings")
    assert "'policyProfiles.ports.hostPortPolicy'" in str(e.value) + e.value.details
    T.check_host_ports([{"hostPort": 30005, "containerPort": 80}], pol, "pod", "portMappings")


def test_label_problems_are_said() -> None:
    ps = T.policies(DOC, "kube-system")
    assert "no such profile" in ps.label_problem("team-a", label("nope"))
    assert "known: platform, ports" in ps.label_problem("team-a", label("nope"))
    assert ps.label_problem("team-a", label("ports")) == ""
    assert ps.label_problem("team-a", {}) == "" and ps.label_problem("team-a", None) == ""


@pytest.mark.parametrize("doc, where", [
    ({"policyProfiles": []}, "policyProfiles"),
    ({"policyProfiles": {"p": "open"}}, "policyProfiles.p"),
    ({"policyProfiles": {"p": {"hostPortPolicy": [{"ports": "70000"}]}}}, "policyProfiles.p.hostPortPolicy[0].ports"),
    ({"policyProfiles": {"p": {"bogus": 1}}}, "policyProfiles.p.bogus"),
])
def test_a_bad_profile_is_7_naming_the_key(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": [], **doc})
    assert e.value.code == 7 and repr(where) in str(e.value), str(e.value)


def test_permissive_profiles_are_named_for_the_doctor() -> None:
    found = T.permissive(T.policies(DOC, "kube-system"))
    assert "policyProfiles.platform: every namespace labelled multinic.io/policy=platform is trusted: its pods and " \
           "NADs are not restricted" in found
    assert not any("ports" in f for f in found)  # 30000-32767 is not a node service port


class Source:
    """A pod source double: Namespace objects by name, an error to raise, and a count of reads."""

    def __init__(self, namespaces: dict[str, dict[str, str]], error: Exception | None = None) -> None:
        self.namespaces = namespaces
        self.error = error
        self.reads: list[str] = []

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        if self.error is not None:
            raise self.error
        labels = self.namespaces.get(name)
        return None if labels is None else {"metadata": {"name": name, "labels": labels}}


def cfg(**doc: Any) -> cfgmod.MultinicConfig:
    return cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": [], **DOC, **doc})


def test_the_guard_reads_each_namespace_once_and_fails_closed_with_a_log_line(caplog: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    monkeypatch.setattr(tenancy_io.log, "warning", lines.append)
    src = Source({"team-a": label("ports"), "team-b": label("nope"), "team-c": {}})
    g = tenancy_io.Guard(cfg(), "team-a", [], src)
    assert g.pod_policy.profile == "ports"
    assert g.policy_for("team-a").profile == "ports" and src.reads == ["team-a"]  # cached for the command
    assert g.policy_for("team-b").host_ports == () and "no such profile" in lines[-1]
    assert g.policy_for("team-c").host_ports == () and len(lines) == 1  # no label: nothing to say
    assert g.policy_for("gone").host_ports == () and "no such Namespace" in lines[-1]
    assert g.policy_for("pinned").allowed_paths == ("/srv/cni",) and "pinned" not in src.reads
    down = Source({}, ApiUnavailable("the API server is down"))
    g = tenancy_io.Guard(cfg(), "team-a", [], down)
    assert g.pod_policy.host_ports == () and "cannot read its multinic.io/policy label" in lines[-1]
    assert "the API server is down" in lines[-1]
    g = tenancy_io.Guard(cfg(), "team-a", [], None)  # a source without get_namespace
    assert g.pod_policy.host_ports == () and "no API" in lines[-1]
    no_profiles = cfgmod.parse({"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": []})
    quiet = Source({})
    tenancy_io.Guard(no_profiles, "team-a", [], quiet).check(None, "team-a/x", _conflist(), None)
    assert quiet.reads == []


def _conflist() -> Any:
    from cni.spec.config import conflist_from

    return conflist_from({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan", "master": "x0"}]})


def test_the_webhook_makes_the_same_choice() -> None:
    from cni.k8s import webhook as wh

    doc = {"cniVersion": "1.0.0", "name": "m", "type": "multinic", "delegates": [], **DOC}
    src = Source({"team-a": label("ports"), "team-b": label("nope")})
    t = wh.Tenancy.from_config(doc)
    import dataclasses

    t = dataclasses.replace(t, namespaces=src)
    from cni.k8s.annotations import parse_networks

    (sel,) = parse_networks('[{"name": "n", "portMappings": [{"hostPort": 31000, "containerPort": 80}]}]', "team-a")
    wh.check_selection(sel, None, "team-a", t)  # allowed by the profile
    for ns in ("team-b", "gone"):
        with pytest.raises(wh.Denied) as e:
            wh.check_selection(sel, None, ns, t)
        assert "hostPortPolicy" in e.value.message
    with pytest.raises(wh.Denied):
        wh.check_selection(sel, None, "team-a", wh.Tenancy.from_config(doc))  # no reader: fail closed
