"""Policy, failure and recovery scenarios of the delegator, with real namespaces.

Each runs against the API server double and the local manifest source. The plugin
implementation does not matter to these behaviours, so most pin the reference plugins
(the seed-example tests cover both).
"""

from __future__ import annotations

import gzip
import json
import os
import re

import pytest

from tests.support.nsfix import sh

REF = pytest.mark.parametrize("plugins", ["reference"], indirect=True)


def _nothing_left(world, ns: str, before: object = None) -> None:
    assert world.links(ns) == {"lo"}
    assert world.leftovers() == {"cache": [], "ipam": []}
    # The cluster network's host-side veth is gone (other tests on this host come and go, so
    # only our own bridge's ports are compared).
    assert sh("ip", "-o", "link", "show", "master", world.cluster_bridge).strip() == ""


@REF
def test_namespace_isolation_allows_own_and_global_namespaces(world) -> None:
    world.add_nad("mine", world.macvlan("mine", "172.16.0.0/24"), ns="team-a")
    world.add_nad("shared", world.macvlan("shared", "172.17.0.0/24"), ns="shared-nets")
    world.add_pod("ok", "mine,shared-nets/shared", ns="team-a")
    ns = world.scene.netns("p")
    conf = world.conf(namespaceIsolation=True, globalNamespaces="shared-nets, other")
    call = world.cni("ADD", "cid-iso-ok", ns, ("team-a", "ok"), conf)
    assert call.ok, call.doc
    assert {"net1", "net2"} <= world.links(ns)
    assert world.cni("DEL", "cid-iso-ok", ns, ("team-a", "ok"), conf).ok


@REF
def test_namespace_isolation_denies_another_namespace(world) -> None:
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24"), ns="privileged")
    world.add_pod("intruder", "privileged/gke-network-1", ns="development")
    ns = world.scene.netns("p")
    before = None
    call = world.cni("ADD", "cid-iso", ns, ("development", "intruder"), world.conf(namespaceIsolation=True))
    assert call.rc == 1 and call.doc["code"] == 102
    assert ("namespace isolation enabled, annotation violates permission, pod is in namespace development but "
            "refers to target namespace privileged") in call.doc["msg"]
    assert call.doc["msg"].startswith(f"[development/intruder/{world.uids[('development', 'intruder')]}]: ")
    (ev,) = [e for e in world.events("intruder") if e["type"] == "Warning"]
    assert ev["reason"] == "ErrorAddingNetwork" and "namespace isolation" in ev["message"]
    assert any("[error]" in ln and "namespace isolation enabled" in ln for ln in world.log_lines())
    _nothing_left(world, ns, before)


@REF
def test_node_selector_allows_labelled_node_and_denies_others(world) -> None:
    nad_anns = {"k8s.v1.cni.cncf.io/nodeSelector": "my-label=multinicNP"}
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24"), annotations=nad_anns)
    world.add_pod("restricted", "gke-network-1")
    world.add_node({"my-label": "multinicNP"}, name="node-np")
    ns = world.scene.netns("p")
    # The node without the label: refused, with the event.
    before = None
    call = world.cni("ADD", "cid-sel", ns, ("default", "restricted"))
    assert call.rc == 1 and call.doc["code"] == 102
    assert "network default/gke-network-1 is restricted to nodes labelled my-label=multinicNP; node node-a is not" \
        in call.doc["msg"]
    (ev,) = [e for e in world.events("restricted") if e["type"] == "Warning"]
    assert ev["reason"] == "ErrorAddingNetwork" and "my-label=multinicNP" in ev["message"]
    _nothing_left(world, ns, before)
    # The labelled node: allowed.
    conf = world.conf(nodeName="node-np")
    call = world.cni("ADD", "cid-sel", ns, ("default", "restricted"), conf)
    assert call.ok, call.doc
    assert "net1" in world.links(ns)
    assert world.cni("DEL", "cid-sel", ns, ("default", "restricted"), conf).ok


@REF
def test_disallowed_plugin_type_is_refused_naming_it(world) -> None:
    world.add_nad("ptp-net", {"cniVersion": "1.0.0", "type": "ptp",
                              "ipam": {"type": "host-local", "subnet": "172.30.0.0/24"}})
    world.add_pod("p", "ptp-net")
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-type", ns, ("default", "p"))
    assert call.rc == 1 and call.doc["code"] == 102
    assert "network default/ptp-net uses plugin type(s) ptp that this node does not allow" in call.doc["msg"]
    assert world.links(ns) == {"lo"}
    # The admin may allow it.
    conf = world.conf(allowedPluginTypes=["ptp", "host-local"])
    call = world.cni("ADD", "cid-type", ns, ("default", "p"), conf)
    assert call.ok, call.doc
    assert world.cni("DEL", "cid-type", ns, ("default", "p"), conf).ok
    # And a narrower list refuses even a seed type.
    world.add_nad("mv", world.macvlan("mv", "172.16.0.0/24"))
    world.add_pod("q", "mv")
    call = world.cni("ADD", "cid-type2", ns, ("default", "q"), world.conf(allowedPluginTypes=["host-local"]))
    assert call.doc["code"] == 102 and "plugin type(s) macvlan" in call.doc["msg"]


@REF
def test_pod_missing_fails_add_with_code_11_never_an_empty_success(world) -> None:
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-nopod", ns, ("default", "ghost"))
    assert call.rc == 1 and call.doc["code"] == 11
    assert "pod default/ghost not found" in call.doc["msg"]
    assert world.links(ns) == {"lo"} and world.leftovers()["cache"] == []


@REF
def test_pod_uid_mismatch_fails_add(world) -> None:
    world.add_pod("sts-0")
    world.uids[("default", "sts-0")] = "00000000-0000-0000-0000-000000000000"
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-uid", ns, ("default", "sts-0"))
    assert call.doc["code"] == 11 and "expected pod UID" in call.doc["msg"]


@REF
def test_missing_nad_sends_no_network_found(world) -> None:
    world.add_pod("p", "default/nope")
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-nf", ns, ("default", "p"))
    assert call.rc == 1 and call.doc["code"] == 103
    assert "cannot find a network-attachment-definition (nope) in namespace (default)" in call.doc["msg"]
    (ev,) = world.events("p")
    assert ev["reason"] == "NoNetworkFound" and ev["type"] == "Warning"
    assert world.links(ns) == {"lo"}


@REF
def test_nad_deleted_before_del_is_cleaned_from_the_cache(world) -> None:
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24"))
    world.add_pod("p", "gke-network-1")
    ns = world.scene.netns("p")
    before = None
    assert world.cni("ADD", "cid-gone", ns, ("default", "p")).ok
    world.delete_nad("gke-network-1")
    world.delete_pod("p")
    call = world.cni("DEL", "cid-gone", ns, ("default", "p"))
    assert call.ok, call.doc
    _nothing_left(world, ns, before)


@REF
@pytest.mark.parametrize("pod_kept", [True, False], ids=["pod-kept", "pod-gone"])
def test_truncated_cache_still_cleans_everything(world, pod_kept: bool) -> None:
    world.add_nad("n1", world.macvlan("n1", "172.16.0.0/24"))
    world.add_nad("n2", world.macvlan("n2", "172.17.0.0/24"))
    world.add_pod("p", "n1,n2")
    ns = world.scene.netns("p")
    before = None
    assert world.cni("ADD", "cid-trunc", ns, ("default", "p")).ok
    path = world.cni_dir / "cid-trunc"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # cut in the middle of the attachment lines
    if not pod_kept:
        world.delete_pod("p")
    call = world.cni("DEL", "cid-trunc", ns, ("default", "p"))
    assert call.ok, call.doc
    _nothing_left(world, ns, before)
    assert any("cache for cid-trunc is damaged" in ln for ln in world.log_lines())


@REF
def test_failure_of_the_second_attachment_rolls_back_the_first(world) -> None:
    world.add_nad("good", world.macvlan("good", "172.16.0.0/24"))
    world.add_nad("bad", world.macvlan("bad", "172.17.0.0/24", master="nosuchmaster0"))
    uid = world.add_pod("p", "good,bad")
    ns = world.scene.netns("p")
    before = None
    call = world.cni("ADD", "cid-rb", ns, ("default", "p"), binary=True)
    assert call.rc == 1, call.doc
    assert call.doc["msg"].startswith(f"[default/p/{uid}:default/bad]: error adding container to network "
                                      "\"default/bad\": ")
    _nothing_left(world, ns, before)
    warn = [e for e in world.events("p") if e["type"] == "Warning"]
    assert [e["reason"] for e in warn] == ["ErrorAddingNetwork"]
    assert warn[0]["message"] == call.doc["msg"]
    assert world.network_status("p") is None


@pytest.mark.parametrize("plugins", ["reference"], indirect=True)
@pytest.mark.parametrize("world", ["api"], indirect=True)
def test_api_down_fails_add_fast_and_del_works_from_the_cache(world) -> None:
    world.add_nad("gke-network-1", world.macvlan("gke-network-1", "172.16.0.0/24"))
    world.add_pod("p", "gke-network-1")
    ns, ns2 = world.scene.netns("p"), world.scene.netns("p")
    before = None
    assert world.cni("ADD", "cid-up", ns, ("default", "p"), binary=True).ok
    world.api.set_down(True)
    call = world.cni("ADD", "cid-down", ns2, ("default", "p"), binary=True)
    assert call.rc == 1 and call.doc["code"] == 11, call.doc
    assert call.seconds < 5.0
    assert "Kubernetes API unreachable" in call.doc["msg"]
    assert world.links(ns2) == {"lo"}
    assert len(os.listdir(world.cni_dir / ".pending-events")) == 1  # the failure's event waits for the API
    # Unreachable by latency rather than refusal: still within the apiTimeoutSeconds budget.
    world.api.set_down(False)
    world.api.set_latency(3.0)
    call = world.cni("ADD", "cid-slow", ns2, ("default", "p"), world.conf(apiTimeoutSeconds=1))
    assert call.doc.get("code") == 11 and call.seconds < 2.5, (call.doc, call.seconds)
    world.api.set_latency(0)
    world.api.set_down(True)
    call = world.cni("DEL", "cid-up", ns, ("default", "p"), binary=True)
    assert call.ok, call.doc
    assert call.seconds < 5.0
    _nothing_left(world, ns, before)


@REF
def test_default_route_request_moves_the_pod_default_route(world) -> None:
    world.add_nad("gw-net", world.macvlan("gw-net", "172.16.0.0/24", gateway="172.16.0.1"))
    world.add_pod("p", [{"name": "gw-net", "default-route": ["172.16.0.1"]}])
    ns = world.scene.netns("p")
    assert world.cni("ADD", "cid-dr", ns, ("default", "p")).ok
    routes = sh("ip", "route", "show", ns=ns)
    assert re.search(r"^default via 172\.16\.0\.1 dev net1", routes, re.M), routes
    assert not re.search(r"^default .* dev eth0", routes, re.M), routes
    eth0, net1 = world.network_status("p")
    assert net1["gateway"] == ["172.16.0.1"] and "gateway" not in eth0
    assert eth0["default"] is True  # the cluster network stays the primary
    rec = (world.cni_dir / "cid-dr").read_text()
    assert '"dst":"0.0.0.0/0","gw":"10.244.7.1"' not in rec.replace(" ", "")
    assert world.cni("DEL", "cid-dr", ns, ("default", "p")).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


@REF
def test_default_networks_skip_system_namespaces_and_ignore_isolation(world) -> None:
    world.add_nad("extra", world.macvlan("extra", "172.16.0.0/24"), ns="kube-system")
    world.add_pod("app", ns="default")
    world.add_pod("dns", ns="kube-system")
    conf = world.conf(defaultNetworks=["extra"], namespaceIsolation=True)
    ns1, ns2 = world.scene.netns("p"), world.scene.netns("p")
    assert world.cni("ADD", "cid-dn1", ns1, ("default", "app"), conf).ok
    assert "net1" in world.links(ns1)
    assert [s["name"] for s in world.network_status("app")] == ["cbr0", "kube-system/extra"]
    assert world.cni("ADD", "cid-dn2", ns2, ("kube-system", "dns"), conf).ok
    assert "net1" not in world.links(ns2)
    for cid, ns, pod in (("cid-dn1", ns1, ("default", "app")), ("cid-dn2", ns2, ("kube-system", "dns"))):
        assert world.cni("DEL", cid, ns, pod, conf).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


@REF
@pytest.mark.parametrize("how", ["nad", "confdir", "path"])
def test_cluster_network_by_nad_conf_name_or_path(world, how: str) -> None:
    primary = world.primary()
    conf = world.conf()
    del conf["delegates"]
    if how == "nad":
        world.add_nad("cluster", {k: v for k, v in primary.items() if k != "name"}, ns="infra")
        conf.update(clusterNetwork="cluster", multusNamespace="infra")
        expect = "infra/cluster"
    elif how == "confdir":
        (world.tmp / "net.d").mkdir(exist_ok=True)
        (world.tmp / "net.d" / "10-cbr0.conf").write_text(json.dumps(primary))
        conf.update(clusterNetwork="cbr0")
        expect = "cbr0"
    else:
        p = world.tmp / "primary.conf"
        p.write_text(json.dumps(primary))
        conf.update(clusterNetwork=str(p))
        expect = "cbr0"
    world.add_pod("p")
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-cn", ns, ("default", "p"), conf)
    assert call.ok, call.doc
    assert [s["name"] for s in world.network_status("p")] == [expect]
    assert world.cni("DEL", "cid-cn", ns, ("default", "p"), conf).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


@REF
def test_default_network_annotation_overrides_the_cluster_network(world) -> None:
    alt = world.primary()
    alt["ipam"]["ranges"] = [[{"subnet": "10.99.0.0/24"}]]
    world.add_nad("alt", {k: v for k, v in alt.items() if k != "name"}, ns="kube-system")
    world.add_pod("p", annotations={"v1.multus-cni.io/default-network": "kube-system/alt"})
    ns = world.scene.netns("p")
    call = world.cni("ADD", "cid-alt", ns, ("default", "p"))
    assert call.ok, call.doc
    assert world.addrs(ns, "eth0")[0].startswith("10.99.0.")
    assert world.network_status("p")[0]["name"] == "kube-system/alt"
    assert world.cni("DEL", "cid-alt", ns, ("default", "p")).ok
    # An override is held to the allowlist (else a pod could pick any plugin as its primary).
    world.add_nad("evil", {"cniVersion": "1.0.0", "type": "ptp", "ipam": {"type": "host-local", "subnet": "10.98.0.0/24"}},
                  ns="kube-system")
    world.add_pod("q", annotations={"v1.multus-cni.io/default-network": "kube-system/evil"})
    call = world.cni("ADD", "cid-evil", ns, ("default", "q"))
    assert call.doc["code"] == 102 and "ptp" in call.doc["msg"]


@REF
def test_readiness_indicator_file(world) -> None:
    world.add_pod("p")
    ns = world.scene.netns("p")
    ready = world.tmp / "ready"
    conf = world.conf(readinessindicatorfile=str(ready), readinessTimeoutSeconds=0.3)
    call = world.cni("ADD", "cid-ready", ns, ("default", "p"), conf)
    assert call.doc["code"] == 11 and "readinessindicatorfile" in call.doc["msg"]
    assert world.links(ns) == {"lo"}
    status = world.cni("STATUS", "", "", None, {**conf, "cniVersion": "1.1.0"})
    assert status.doc["code"] == 50
    ready.write_text("")
    assert world.cni("ADD", "cid-ready", ns, ("default", "p"), conf).ok
    assert world.cni("STATUS", "", "", None, {**conf, "cniVersion": "1.1.0"}).ok
    assert world.cni("DEL", "cid-ready", ns, ("default", "p"), conf).ok


@REF
def test_check_and_gc(world) -> None:
    world.add_nad("n1", world.macvlan("n1", "172.16.0.0/24"))
    world.add_pod("p", "n1")
    world.add_pod("q", "n1")
    ns1, ns2 = world.scene.netns("p"), world.scene.netns("p")
    assert world.cni("ADD", "cid-c1", ns1, ("default", "p")).ok
    assert world.cni("ADD", "cid-c2", ns2, ("default", "q")).ok
    assert world.cni("CHECK", "cid-c1", ns1, ("default", "p")).ok
    sh("ip", "link", "del", "net1", ns=ns1)
    call = world.cni("CHECK", "cid-c1", ns1, ("default", "p"))
    assert call.rc == 1 and "default/n1 (net1)" in call.doc["msg"], call.doc
    # GC keeps cid-c2 only: cid-c1's attachments are released (cache and IPAM).
    gc_conf = world.conf(cniVersion="1.1.0")
    gc_conf["cni.dev/valid-attachments"] = [{"containerID": "cid-c2", "ifname": "eth0"}]
    # a writer killed inside a cache write left its temp file: GC removes it with the stale record
    (world.cni_dir / ".cid-c9.tmp.999999999.1").write_text("torn")
    # … and a process killed after its DEL dropped the record left the sandbox's lock file: GC removes it too
    (world.cni_dir / ".locks" / "cid-c8").write_text("")
    call = world.cni("GC", "", "", None, gc_conf)
    assert call.ok, call.doc
    assert sorted(f for f in os.listdir(world.cni_dir) if f not in (".history", ".locks")) == ["cid-c2"]
    assert os.listdir(world.cni_dir / ".locks") == ["cid-c2"]  # the live sandbox's lock stays with its record
    assert len(world.leftovers()["ipam"]) == 2  # q's eth0 and net1
    assert world.cni("DEL", "cid-c2", ns2, ("default", "q")).ok
    assert world.leftovers() == {"cache": [], "ipam": []}


@REF
@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_log_rotation_applies_on_error_paths_too(world) -> None:
    world.add_pod("p", "nope")
    ns = world.scene.netns("p")
    conf = world.conf(logLevel="debug", logOptions={"maxSize": 0.0005, "maxBackups": 2, "compress": True})
    for i in range(6):
        world.cni("ADD", f"cid-log{i}", ns, ("default", "p"), conf)
    # An invalid config is still logged where the admin looks.
    bad = {**conf, "apiTimeoutSeconds": "soon"}
    call = world.cni("ADD", "cid-bad", ns, ("default", "p"), bad)
    assert call.doc["code"] == 7
    logdir = world.log_file.parent
    backups = sorted(f for f in os.listdir(logdir) if f.startswith("multus-") and f.endswith(".log.gz"))
    assert 1 <= len(backups) <= 2
    assert b"[error]" in gzip.decompress((logdir / backups[-1]).read_bytes())
    assert os.path.getsize(world.log_file) < 4096
    assert "apiTimeoutSeconds" in world.log_file.read_text()


def _tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in dirs + files}


@pytest.mark.parametrize("plugins", ["native"], indirect=True)
@pytest.mark.parametrize("cache_dir", ["missing", "existing"])
def test_a_del_of_a_sandbox_never_added_leaves_the_disk_as_it_found_it(world, cache_dir: str) -> None:
    """Not even the cache directory or its lock directory (the sandbox lock is taken, then tidied away); only the
    log says it happened. (The reference host-local makes its dataDir and lock file on DEL: its behaviour.)"""
    world.add_pod("ghost")
    ns = world.scene.netns("p")
    conf = world.conf(cniDir=str(world.tmp / "fresh-cache"))
    if cache_dir == "existing":
        os.mkdir(world.tmp / "fresh-cache", 0o700)
    before = _tree(world.tmp)
    call = world.cni("DEL", "cid-never-added", ns, ("default", "ghost"), conf, binary=True)
    assert call.ok, (call.doc, call.stderr)
    assert _tree(world.tmp) - before <= {"log", "log/multus.log"}
