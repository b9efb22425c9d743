"""``multinic status``, ``inspect`` and ``logs`` against a node with real pods (real netns, host-local and whereabouts
files, the API double), run as the admin runs them: an exec of the installed executable."""

from __future__ import annotations

import gzip
import os
import subprocess

from tests.netns.admin.conftest import Node
from tests.support.nsfix import sh


def test_status_lists_every_attachment_of_every_cached_sandbox_with_its_ips(node: Node) -> None:
    node.add_pod("web", "mv,wb")
    node.add_pod("db", "mv")
    rc, doc = node.run_json("status")
    assert rc == 0
    by_pod = {s["pod"]: s for s in doc}
    assert set(by_pod) == {"web", "db"}
    web = by_pod["web"]
    assert web["containerID"] == node.pods["web"][0] and web["netnsAlive"] and web["state"] == "added"
    assert [(a["network"], a["interface"], a["state"]) for a in web["attachments"]] == [
        (node.cluster, "eth0", "added"), ("default/mv", "net1", "added"), ("default/wb", "net2", "added")]
    # The IPs shown are the ones the kernel has in the pod's netns.
    for a in web["attachments"]:
        assert a["ips"], a
        got = sh("ip", "-o", "-4", "addr", "show", "dev", a["interface"], ns=node.pods["web"][1])
        assert a["ips"][0] in got
    rc, out, _ = node.run("status")
    assert rc == 0
    assert out.splitlines()[0].split() == ["POD", "CONTAINER", "NETNS", "NETWORK", "IF", "IPS", "STATE", "AGE"]
    assert "default/web" in out and node.pods["web"][0][:12] in out and node.pods["web"][0] not in out


def test_status_check_runs_cni_check_and_reports_a_broken_attachment(node: Node) -> None:
    node.add_pod("web", "mv")
    rc, doc = node.run_json("status", "--check")
    assert rc == 0
    assert [a["check"] for a in doc[0]["attachments"]] == ["ok", "ok"]
    # Someone removes net1's address inside the pod: CHECK must say so, and status exits 1.
    _, netns, _ = node.pods["web"]
    sh("ip", "addr", "flush", "dev", "net1", ns=netns)
    rc, doc = node.run_json("status", "--check")
    assert rc == 1
    checks = {a["interface"]: a["check"] for a in doc[0]["attachments"]}
    assert checks["eth0"] == "ok"
    assert checks["net1"].startswith("failed:"), checks


def test_status_flags_a_sandbox_whose_netns_is_gone(node: Node) -> None:
    node.add_pod("web", "mv")
    node.add_pod("db")
    _, netns, _ = node.pods["db"]
    subprocess.run(["ip", "netns", "del", netns], check=True)
    rc, doc = node.run_json("status")
    assert rc == 1
    by_pod = {s["pod"]: s for s in doc}
    assert by_pod["web"]["netnsAlive"] and not by_pod["web"]["problems"]
    assert not by_pod["db"]["netnsAlive"]
    assert any("is gone" in p for p in by_pod["db"]["problems"])
    rc, out, _ = node.run("status")
    assert "(gone)" in out and "multinic leaks --fix" in out


def test_status_of_an_empty_cache_says_so(node: Node) -> None:
    rc, out, _ = node.run("status")
    assert rc == 0 and "no pod sandboxes" in out


def test_inspect_shows_request_nads_policy_cache_status_kernel_and_log(node: Node) -> None:
    node.add_pod("web", "mv,wb")
    rc, doc = node.run_json("inspect", "default/web")
    assert rc == 0
    nets = doc["networks"]
    assert nets["annotation"] == "mv,wb"
    assert nets["clusterNetwork"]["name"] == node.cluster
    assert [(r["network"], r["nad"], r["types"]) for r in nets["requested"]] == [
        ("default/mv", "default/mv", ["macvlan", "host-local"]), ("default/wb", "default/wb", ["macvlan", "whereabouts"])]
    assert all(r["policy"]["allowedPluginTypes"] == "allowed" for r in nets["requested"])
    assert [e["interface"] for e in doc["networkStatus"]] == ["eth0", "net1", "net2"]
    (sb,) = doc["sandboxes"]
    assert sb["containerID"] == node.pods["web"][0] and sb["state"] == "added"
    assert [a["interface"] for a in sb["attachments"]] == ["eth0", "net1", "net2"]
    names = {link["ifname"] for link in sb["kernel"]["links"]}
    assert {"lo", "eth0", "net1", "net2"} <= names
    assert any(r.get("dst") == "default" for r in sb["kernel"]["routes"])
    assert doc["log"] and all("web" in line for line in doc["log"])
    rc, out, _ = node.run("inspect", "default/web")
    assert rc == 0
    for needle in ("Requested:  mv,wb", "network-status", "Sandbox " + node.pods["web"][0], "-- routes", "Last log lines"):
        assert needle in out, needle


def test_inspect_reports_policy_denials_an_add_would_meet_now(node: Node) -> None:
    node.add_pod("web", "mv")
    # After the pod came up the admin restricts the allowed plugin types: inspect shows the denial.
    import json

    doc = json.loads(node.conf_path.read_text())
    doc["plugins"][0]["allowedPluginTypes"] = ["bridge"]
    node.write_conf(doc)
    rc, got = node.run_json("inspect", "default/web")
    assert rc == 0
    (req,) = got["networks"]["requested"]
    assert req["policy"]["allowedPluginTypes"].startswith("denied:") and "macvlan" in req["policy"]["allowedPluginTypes"]


def test_inspect_of_a_pod_nobody_knows_exits_4(node: Node) -> None:
    node.add_pod("web")
    rc, out, err = node.run("inspect", "default/nosuchpod")
    assert rc == 4 and not out
    assert "default/nosuchpod is unknown" in err


def test_inspect_a_cached_pod_whose_netns_is_gone_still_shows_the_cache(node: Node) -> None:
    node.add_pod("web", "mv")
    subprocess.run(["ip", "netns", "del", node.pods["web"][1]], check=True)
    node.api.delete_obj("pods", "web", "default")
    rc, doc = node.run_json("inspect", "default/web")
    assert rc == 0
    assert doc["source"].startswith("pod not found")
    (sb,) = doc["sandboxes"]
    assert not sb["netnsAlive"] and "gone" in sb["kernel"]["error"]


def test_logs_filters_one_pod_across_rotated_gzip_backups(node: Node) -> None:
    node.add_pod("web", "mv")
    node.add_pod("db")
    # Rotate the log as multinic's logger does (timestamped .gz backup), then log more.
    log = str(node.log_file)
    backup = log.replace(".log", "-2026-01-01T00-00-00.000.log.gz")
    with open(log, "rb") as src, gzip.open(backup, "wb") as dst:
        dst.write(src.read())
    os.unlink(log)
    node.add_pod("cache")
    rc, out, _ = node.run("logs", "default/web")
    assert rc == 0
    lines = out.splitlines()
    assert lines and all("web" in line for line in lines)
    assert any("Add:" in line and ":net1 " in line for line in lines)  # from the .gz backup
    rc, out, _ = node.run("logs")
    assert rc == 0 and "default:db:" in out and "default:cache:" in out
    rc, doc = node.run_json("logs", "default/cache", "-n", "1")
    assert rc == 0 and len(doc) == 1 and doc[0]["level"] == "verbose" and "cache" in doc[0]["message"]


def test_logs_of_an_unknown_pod_exits_4_and_without_log_file_3(node: Node) -> None:
    node.add_pod("web")
    rc, _, err = node.run("logs", "default/ghost")
    assert rc == 4 and "no line about pod default/ghost" in err
    import json

    doc = json.loads(node.conf_path.read_text())
    del doc["plugins"][0]["logFile"]
    node.write_conf(doc)
    rc, _, err = node.run("logs")
    assert rc == 3 and "sets no logFile" in err


def test_inspect_shows_isolation_and_node_selector_decisions_for_a_pod_not_yet_added(node: Node) -> None:
    import json

    node.api.seed({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                   "metadata": {"name": "sel", "namespace": "other",
                                "annotations": {"k8s.v1.cni.cncf.io/nodeSelector": "rack=r2"}},
                   "spec": {"config": json.dumps({"cniVersion": "1.0.0", "type": "macvlan", "master": node.uplink,
                                                  "ipam": {"type": "static"}})}},
                  plural="network-attachment-definitions")
    node.api.seed({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p2", "namespace": "default",
                                "annotations": {"k8s.v1.cni.cncf.io/networks": "other/sel@ext0,nosuch"}},
                   "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "x"}]}})
    doc = json.loads(node.conf_path.read_text())
    doc["plugins"][0]["namespaceIsolation"] = True
    node.write_conf(doc)
    rc, got = node.run_json("inspect", "default/p2")
    assert rc == 0 and got["sandboxes"] == []
    sel, missing = got["networks"]["requested"]
    assert sel["network"] == "other/sel" and sel["interface"] == "ext0"
    assert sel["policy"]["namespaceIsolation"].startswith("denied:")
    assert sel["policy"]["nodeSelector"].startswith("denied:") and "rack" in sel["policy"]["nodeSelector"]
    assert sel["nodeSelector"] == {"rack": "r2"}
    assert missing["nad"].startswith("not found")
