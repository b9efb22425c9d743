"""cni.delegator.tenancy: the multi-tenant decisions, without a kernel or a disk."""

from __future__ import annotations

from typing import Any

import pytest

from cni.delegator import config as cfgmod
from cni.delegator import tenancy as T
from cni.spec.config import conflist_from
from cni.spec.errors import InvalidConfig, PolicyDenied

DEFAULT = T.Policies().for_namespace("team-a")
FACTS = T.Facts(uplinks=frozenset({"eth0"}), cluster_bridges=frozenset({"cbr0"}),
                reserved_dirs=("/var/lib/cni/multus",))


def cl(*plugins: dict[str, Any]) -> Any:
    return conflist_from({"cniVersion": "1.0.0", "name": "n", "plugins": list(plugins)})


def pol(**doc: Any) -> T.Policy:
    return T.policies(doc).for_namespace("team-a")


def nad_check(conf: Any, policy: T.Policy = DEFAULT, resolved: dict[str, str] | None = None) -> None:
    T.check_nad(conf, policy, FACTS, resolved or {}, "team-a/evil")


# ---- host ports ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [22, 6443, 10250, 1, 65535, 30000])
@pytest.mark.parametrize("proto", ["tcp", "udp", "sctp", "UDP"])
def test_annotation_host_port_refused_by_default_naming_the_key(port: int, proto: str) -> None:
    with pytest.raises(PolicyDenied) as e:
        T.check_host_ports([{"hostPort": port, "containerPort": 80, "protocol": proto}], DEFAULT, "pod", "portMappings")
    assert e.value.code == 102
    text = str(e.value)
    assert f"host port {port}/{proto.lower()}" in text
    assert "'multinicPolicy.team-a.hostPortPolicy'" in text and "'hostPortPolicy'" in text


def test_host_port_range_rule_edges_and_protocols() -> None:
    p = pol(hostPortPolicy=[{"ports": "30000-32767", "protocols": ["tcp"]}])
    for ok in (30000, 31000, 32767):
        T.check_host_ports([{"hostPort": ok, "containerPort": 1}], p, "pod", "pm")
    for bad in (29999, 32768, 22):
        with pytest.raises(PolicyDenied):
            T.check_host_ports([{"hostPort": bad, "containerPort": 1}], p, "pod", "pm")
    with pytest.raises(PolicyDenied, match="30001/udp"):
        T.check_host_ports([{"hostPort": 30001, "containerPort": 1, "protocol": "udp"}], p, "pod", "pm")


def test_one_refused_mapping_among_allowed_ones_refuses_the_lot() -> None:
    p = pol(hostPortPolicy=[{"ports": 8080}])
    with pytest.raises(PolicyDenied, match="host port 22/tcp"):
        T.check_host_ports([{"hostPort": 8080, "containerPort": 1}, {"hostPort": 22, "containerPort": 22}], p, "p", "x")


def test_host_ip_loopback_needs_an_explicit_rule() -> None:
    p = pol(hostPortPolicy=[{"ports": 8080}])
    T.check_host_ports([{"hostPort": 8080, "containerPort": 1, "hostIP": "192.0.2.1"}], p, "p", "x")
    for lo in ("127.0.0.1", "::1", "127.1.2.3", "::ffff:127.0.0.1"):
        with pytest.raises(PolicyDenied, match="8080/tcp on"):
            T.check_host_ports([{"hostPort": 8080, "containerPort": 1, "hostIP": lo}], p, "p", "x")
    p = pol(hostPortPolicy=[{"ports": 8080, "hostIPs": ["127.0.0.1"]}])
    T.check_host_ports([{"hostPort": 8080, "containerPort": 1, "hostIP": "127.0.0.1"}], p, "p", "x")
    with pytest.raises(PolicyDenied):  # a rule with hostIPs does not allow every address
        T.check_host_ports([{"hostPort": 8080, "containerPort": 1}], p, "p", "x")


def test_every_go_spelling_of_a_mapping_key_is_checked() -> None:
    p = pol(hostPortPolicy=[{"ports": 8080, "protocols": ["tcp"]}])
    for m in ({"HostPort": 22, "containerPort": 1}, {"hostport": 22}, {"hostPort": 8080, "HOSTPORT": 22},
              {"hostPort": 8080, "Protocol": "udp"}, {"hostPort": 8080, "HostIP": "127.0.0.1"}):
        with pytest.raises(PolicyDenied):
            T.check_host_ports([m], p, "p", "x")


@pytest.mark.parametrize("bad", [{"hostPort": "22"}, {"hostPort": True}, {"hostPort": 22.0}, {"hostPort": 0},
                                 {"hostPort": 70000}, {"containerPort": 1}, {"hostPort": 80, "protocol": "icmp"},
                                 {"hostPort": 80, "hostIP": "not-an-ip"}, "22:22", {"hostPort": "1-65535"}])
def test_a_mapping_read_differently_by_a_plugin_is_refused_7(bad: Any) -> None:
    with pytest.raises(InvalidConfig) as e:
        T.check_host_ports([bad], pol(hostPortPolicy=[{"ports": "1-65535"}]), "p", "x")
    assert e.value.code == 7


def test_namespace_override_and_trusted() -> None:
    ps = T.policies({"multinicPolicy": {"platform": {"hostPortPolicy": [{"ports": 443}]}, "ops": "trusted"}},
                    "kube-system")
    T.check_host_ports([{"hostPort": 443}], ps.for_namespace("platform"), "p", "x")
    with pytest.raises(PolicyDenied):
        T.check_host_ports([{"hostPort": 443}], ps.for_namespace("team-a"), "p", "x")
    T.check_host_ports([{"hostPort": 22}], ps.for_namespace("ops"), "p", "x")
    T.check_host_ports([{"hostPort": 22}], ps.for_namespace("kube-system"), "p", "x")
    # kube-system listed: its entry applies
    ps = T.policies({"multinicPolicy": {"kube-system": {"allowedPaths": ["/srv"]}}}, "kube-system")
    with pytest.raises(PolicyDenied):
        T.check_host_ports([{"hostPort": 22}], ps.for_namespace("kube-system"), "p", "x")


def test_nad_embedded_runtime_config_port_mappings_are_checked() -> None:
    for key in ("runtimeConfig", "RuntimeConfig", "runtimeconfig"):
        conf = cl({"type": "macvlan", "master": "ens224"},
                  {"type": "portmap", key: {"portMappings": [{"hostPort": 10250, "containerPort": 1}]}})
        with pytest.raises(PolicyDenied, match=rf"network team-a/evil asks for host port 10250/tcp \(plugins\[1\]\.{key}"):
            nad_check(conf)


# ---- paths ----------------------------------------------------------------------------------------------------------


def _conf_with(ptype: str, key: tuple[str, ...], value: Any) -> Any:
    section: dict[str, Any] = {}
    inner = section
    for part in key[:-1]:
        inner[part] = {}
        inner = inner[part]
    inner[key[-1]] = value
    if ptype in ("host-local", "whereabouts", "static"):
        return cl({"type": "macvlan", "master": "ens224", "ipam": {"type": ptype, **section}})
    return cl({"type": "macvlan", "master": "ens224"}, {"type": ptype, **section})


EVERY_PATH_KEY = [(t, k) for t, keys in T.PATH_KEYS.items() for k in keys]


def test_every_native_plugin_and_ipam_is_enumerated() -> None:
    from cni import invoke

    natives = {t for t in ("macvlan", "ipvlan", "bridge", "sbr", "tuning", "portmap", "host-local", "static",
                           "whereabouts") if invoke.native(t) is not None}
    assert natives <= set(T.PATH_KEYS)


@pytest.mark.parametrize(("ptype", "key"), EVERY_PATH_KEY, ids=lambda x: getattr(x, "name", x))
def test_every_path_key_is_refused_outside_allowed_paths(ptype: str, key: T.PathKey) -> None:
    for value, code in (("/etc/evil", 102), ("/var/lib/cni/../../../etc/evil", 102), ("/var/lib/cni-evil", 102),
                        ("etc/evil", 7), ("./x", 7), ("../x", 7), (["/var/lib/cni"], 7), (5, 7)):
        with pytest.raises((PolicyDenied, InvalidConfig)) as e:
            nad_check(_conf_with(ptype, key.key, value))
        assert e.value.code == code, (value, str(e.value))
        if code == 102:
            assert key.key[-1] in str(e.value) and "allowedPaths" in str(e.value)
    nad_check(_conf_with(ptype, key.key, "/var/lib/cni/ok/x"))
    nad_check(_conf_with(ptype, key.key, "/run/cni/x"))
    nad_check(_conf_with(ptype, key.key, ""))  # the plugin's default
    for d in key.defaults:
        nad_check(_conf_with(ptype, key.key, d))


@pytest.mark.parametrize("spelling", ["DataDir", "datadir", "DATADIR"])
def test_path_keys_in_any_go_spelling(spelling: str) -> None:
    with pytest.raises(PolicyDenied, match=spelling):
        nad_check(cl({"type": "macvlan", "master": "ens224", "IPAM": {"type": "host-local", spelling: "/etc"}}))
    with pytest.raises(PolicyDenied, match=spelling):
        nad_check(cl({"type": "macvlan", "master": "x"}, {"type": "sbr", "dataDir": "/run/cni/sbr", spelling: "/etc"}))
    with pytest.raises(PolicyDenied):
        nad_check(cl({"type": "macvlan", "master": "x", "ipam": {"type": "whereabouts",
                                                                  "Kubernetes": {"KubeConfig": "/root/.kube/config"}}}))


def test_a_symlink_resolving_outside_is_refused_and_roots_are_resolved() -> None:
    conf = cl({"type": "macvlan", "master": "x", "ipam": {"type": "host-local", "dataDir": "/var/lib/cni/evil"}})
    with pytest.raises(PolicyDenied, match="resolves to /etc"):
        nad_check(conf, resolved={"/var/lib/cni/evil": "/etc"})
    # /var/lib/cni itself a symlink to /data/cni: paths there are inside
    nad_check(conf, resolved={"/var/lib/cni/evil": "/data/cni/evil", "/var/lib/cni": "/data/cni"})


def test_multinic_own_state_is_refused_even_inside_allowed_paths() -> None:
    conf = cl({"type": "macvlan", "master": "x", "ipam": {"type": "host-local", "dataDir": "/var/lib/cni/multus/x"}})
    with pytest.raises(PolicyDenied, match="multinic's own state"):
        nad_check(conf)


def test_allowed_paths_override() -> None:
    conf = cl({"type": "macvlan", "master": "x", "ipam": {"type": "host-local", "dataDir": "/srv/ipam"}})
    nad_check(conf, pol(allowedPaths=["/srv"]))
    with pytest.raises(PolicyDenied):
        nad_check(conf)
    with pytest.raises(PolicyDenied):  # the override replaces the defaults
        nad_check(cl({"type": "macvlan", "master": "x", "ipam": {"type": "host-local", "dataDir": "/var/log/x"}}),
                  pol(allowedPaths=["/srv"]))
    nad_check(conf, T.with_extra_paths(DEFAULT, ["/srv"]))


def test_external_types_and_irrelevant_keys_are_not_paths() -> None:
    assert T.path_uses(cl({"type": "macvlan", "master": "x", "dataDir": "/etc"}, {"type": "my-plugin",
                                                                                   "dataDir": "/etc"})) == []


# ---- masters and bridges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ptype", ["macvlan", "ipvlan", "vlan"])
def test_the_uplink_as_master_is_refused(ptype: str) -> None:
    with pytest.raises(PolicyDenied, match="uplink") as e:
        nad_check(cl({"type": ptype, "master": "eth0"}))
    assert "allowedMasters" in str(e.value)
    with pytest.raises(PolicyDenied, match="Master"):
        nad_check(cl({"type": ptype, "master": "ens224", "Master": "eth0"}))
    nad_check(cl({"type": ptype, "master": "ens224"}))
    nad_check(cl({"type": ptype, "master": "eth0", "linkInContainer": True}))


def test_no_master_means_the_default_route_interface() -> None:
    with pytest.raises(PolicyDenied, match="unset"):
        nad_check(cl({"type": "macvlan"}))
    nad_check(cl({"type": "macvlan", "master": "ens224"}, {"type": "ipvlan"}))  # chained ipvlan: pod side
    T.check_nad(cl({"type": "macvlan"}), DEFAULT, T.Facts(), {}, "x")  # no uplink: the plugin will fail anyway


def test_allowed_masters_patterns() -> None:
    p = pol(allowedMasters=["ens2*", "bond0.*"])
    nad_check(cl({"type": "macvlan", "master": "ens224"}), p)
    nad_check(cl({"type": "macvlan", "master": "bond0.100"}), p)
    with pytest.raises(PolicyDenied, match="not in allowedMasters"):
        nad_check(cl({"type": "macvlan", "master": "ens3"}), p)
    nad_check(cl({"type": "macvlan", "master": "eth0"}), pol(allowedMasters=["*"]))
    with pytest.raises(PolicyDenied):
        nad_check(cl({"type": "host-device"}))
    with pytest.raises(PolicyDenied):
        nad_check(cl({"type": "host-device", "device": "eth0"}))


def test_bridges() -> None:
    with pytest.raises(PolicyDenied, match="cluster network"):
        nad_check(cl({"type": "bridge", "bridge": "cbr0"}))
    with pytest.raises(PolicyDenied, match="cluster network"):
        nad_check(cl({"type": "bridge", "bridge": "br-data", "Bridge": "cbr0"}))
    with pytest.raises(PolicyDenied, match="uplink"):
        nad_check(cl({"type": "bridge", "bridge": "eth0"}))
    nad_check(cl({"type": "bridge", "bridge": "br-data"}))
    facts = T.Facts(cluster_bridges=T.bridges_of([{"type": "bridge"}]))
    assert facts.cluster_bridges == {"cni0"}
    with pytest.raises(PolicyDenied, match="cni0"):
        T.check_nad(cl({"type": "bridge"}), DEFAULT, facts, {}, "x")
    p = pol(allowedBridges=["br-*"])
    nad_check(cl({"type": "bridge", "bridge": "br-data"}), p)
    with pytest.raises(PolicyDenied, match="allowedBridges"):
        nad_check(cl({"type": "bridge", "bridge": "data"}), p)
    nad_check(cl({"type": "bridge", "bridge": "cbr0"}), pol(allowedBridges=["cbr0"]))  # explicit admin choice


@pytest.mark.parametrize(("ptype", "key", "change"),
                         [("bridge", k, c) for k, c in T.BRIDGE_HOST_KEYS.items()]
                         + [("portmap", k, "portmapRules") for k in T.PORTMAP_HOST_KEYS])
def test_host_side_changes_need_host_network_changes(ptype: str, key: str, change: str) -> None:
    value: Any = {"conditionsV4": ["-s", "1.2.3.4"], "conditionsV6": ["-s", "::1"], "externalSetMarkChain": "X",
                  "markMasqBit": 0}.get(key, True)
    base: dict[str, Any] = {"type": ptype, "bridge": "br-data"} if ptype == "bridge" else {"type": ptype}
    conf = cl({"type": "macvlan", "master": "ens224"}, {**base, key: value})
    with pytest.raises(PolicyDenied) as e:
        nad_check(conf)
    assert key in str(e.value) and f"{change!r}" in str(e.value) and "hostNetworkChanges" in str(e.value)
    nad_check(conf, pol(hostNetworkChanges=[change]))
    if key != "markMasqBit":
        nad_check(cl({"type": "macvlan", "master": "ens224"}, {**base, key: False if value is True else None}))


# ---- config, node facts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "where"), [
    ({"hostPortPolicy": {"ports": 1}}, "hostPortPolicy"),
    ({"hostPortPolicy": [{"ports": "10-1"}]}, "hostPortPolicy[0].ports"),
    ({"hostPortPolicy": [{"ports": 0}]}, "hostPortPolicy[0].ports"),
    ({"hostPortPolicy": [{"ports": 1, "protocol": ["tcp"]}]}, "hostPortPolicy[0].protocol"),
    ({"hostPortPolicy": [{"ports": 1, "protocols": ["icmp"]}]}, "hostPortPolicy[0].protocols"),
    ({"hostPortPolicy": [{"ports": 1, "hostIPs": ["x"]}]}, "hostPortPolicy[0].hostIPs"),
    ({"allowedPaths": ["var/lib"]}, "allowedPaths"),
    ({"allowedMasters": "eth1"}, "allowedMasters"),
    ({"hostNetworkChanges": ["everything"]}, "hostNetworkChanges"),
    ({"multinicPolicy": {"a": {"allowedPath": ["/x"]}}}, "multinicPolicy.a.allowedPath"),
    ({"multinicPolicy": {"a": "yes"}}, "multinicPolicy.a"),
    ({"multinicPolicy": {"a": {"allowedBridges": [""]}}}, "multinicPolicy.a.allowedBridges"),
])
def test_bad_policy_config_is_7_naming_the_key(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        cfgmod.parse(doc)
    assert e.value.code == 7 and repr(where) in str(e.value), str(e.value)


def test_config_defaults() -> None:
    ps = cfgmod.parse({}).policies
    p = ps.for_namespace("x")
    assert p.host_ports == () and p.allowed_paths == ("/var/lib/cni", "/run/cni", "/var/log")
    assert p.allowed_masters is None and p.allowed_bridges is None and p.host_network_changes == frozenset()
    assert ps.for_namespace("kube-system").trusted and not p.trusted
    assert cfgmod.parse({"multusNamespace": "multus"}).policies.for_namespace("multus").trusted


def test_uplinks_from_proc() -> None:
    v4 = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
          "eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
          "eth2\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n")  # not RTF_UP
    v6 = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 "
          "00000400 00000002 00000000 00000003     ens5\n"
          "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 "
          "ffffffff 00000001 00000000 00200200       lo\n"
          "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 "
          "00000100 00000001 00000000 00000001     eth1\n")
    assert T.uplinks_from_proc(v4, v6) == {"eth0", "ens5"}
    assert T.uplinks_from_proc("", "") == frozenset()


def test_which_nad_configs_are_tenant_input() -> None:
    assert T.tenant_config({"spec": {"config": "{}"}})
    assert not T.tenant_config({"spec": {}}) and not T.tenant_config(None) and not T.tenant_config({"spec": "x"})
    assert T.namespace_of("team-a/net", "kube-system") == "team-a"
    assert T.namespace_of("cbr0", "kube-system") == "kube-system"


def test_defaults_are_the_plugins_own() -> None:
    """A NAD naming a plugin's default is exempt; the exemptions must be the plugins' real defaults."""
    from ipam import host_local
    from ipam.whereabouts import config as wb
    from plugins import _confs, portmap, sbr, tuning

    assert (host_local.DEFAULT_DATA_DIR,) == T.PATH_KEYS["host-local"][0].defaults
    assert set(wb.FLAT_PATHS) == set(T.WHEREABOUTS_FLAT_FILES)
    assert (wb.DEFAULT_LOG_FILE,) == T.PATH_KEYS["whereabouts"][0].defaults
    assert (wb.DEFAULT_DATA_DIR,) == T.PATH_KEYS["whereabouts"][1].defaults
    # The models live in plugins/_confs.py (kept out of the plugin modules: a thin DEL skips pydantic).
    for mod, model in ((tuning, _confs.TuningConf), (sbr, _confs.SbrConf), (portmap, _confs.PortMapConf)):
        assert (model.model_fields["data_dir"].default,) == T.PATH_KEYS[mod.TYPE][0].defaults == (mod.DEFAULT_DATA_DIR,)


def test_permissive_settings_are_named_for_a_doctor() -> None:
    assert T.permissive(T.policies({}, "kube-system")) == []  # the defaults are not permissive
    ps = T.policies({"hostPortPolicy": [{"ports": "30000-32767"}, {"ports": "1-1000"}], "allowedPaths": ["/var/lib/cni", "/"],
                     "allowedMasters": ["*"], "multinicPolicy": {"ops": "trusted",
                                                                 "edge": {"hostNetworkChanges": ["ipMasq"]}}}, "")
    text = "\n".join(T.permissive(ps))
    assert "1-1000, which includes node service ports 22, 53" in text
    assert "30000" not in text
    assert "allowedPaths includes /:" in text and "/var/lib/cni" not in text
    assert "allowedMasters allows every interface" in text
    assert "namespace ops is trusted" in text and "multinicPolicy.edge: hostNetworkChanges allows ipMasq" in text


def test_a_nad_may_not_take_the_name_of_a_node_network() -> None:
    facts = T.Facts(node_networks=T.network_names([{"name": "k8s-pod-network", "plugins": []}, {"type": "bridge"}]))
    assert facts.node_networks == {"k8s-pod-network"}
    same = conflist_from({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "macvlan"}]})
    with pytest.raises(PolicyDenied, match="IPAM store") as e:
        T.check_nad(same, DEFAULT, facts, {}, "team-a/evil")
    assert "k8s-pod-network" in str(e.value)
    T.check_nad(cl({"type": "macvlan", "master": "eth1"}), DEFAULT, facts, {}, "team-a/ok")  # another name passes
    T.check_nad(same, T.policies({"multinicPolicy": {"team-a": "trusted"}}).for_namespace("team-a"), facts, {}, "x")
