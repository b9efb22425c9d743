"""Matching a running pod's cached attachments against its changed annotation (cni.delegator.hotplug_plan)."""

from __future__ import annotations

import pytest

from cni.delegator.hotplug_plan import changes, check_refusals
from cni.delegator.plan import Attachment
from cni.k8s.annotations import AnnotationError, Selection
from cni.spec.config import conflist_from

CL = conflist_from({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}]})


def att(index: int, ifname: str, name: str, primary: bool = False) -> Attachment:
    return Attachment(index, ifname, name, CL, primary=primary)


def sel(name: str, interface: str = "", ns: str = "default") -> Selection:
    return Selection(name=name, namespace=ns, interface=interface)


BASE = [att(0, "eth0", "cluster", primary=True), att(1, "net1", "default/a"), att(2, "net2", "default/b")]


def test_unchanged_annotation_changes_nothing() -> None:
    ch = changes(BASE, [sel("a"), sel("b")])
    assert ch.empty and not ch.refused


def test_new_selection_gets_the_lowest_free_net_name_and_the_next_index() -> None:
    ch = changes(BASE, [sel("a"), sel("b"), sel("c")])
    assert [(n.selection.key, n.index, n.ifname) for n in ch.add] == [("default/c", 3, "net3")]
    assert ch.remove == ()


def test_removed_selection_is_removed_and_the_cluster_network_never_is() -> None:
    ch = changes(BASE, [])
    assert [a.ifname for a in ch.remove] == ["net2", "net1"]  # newest first


def test_unnamed_selection_keeps_the_name_it_has() -> None:
    ch = changes([att(0, "eth0", "cluster", True), att(1, "net1", "default/a"), att(2, "fast0", "default/b")],
                 [sel("b")])
    assert [a.ifname for a in ch.remove] == ["net1"] and ch.add == ()


def test_same_network_twice_removing_one_removes_the_newest_unnamed_match() -> None:
    cur = [att(0, "eth0", "cluster", True), att(1, "net1", "default/a"), att(2, "net2", "default/a")]
    ch = changes(cur, [sel("a")])
    assert [a.ifname for a in ch.remove] == ["net2"]


def test_named_selection_wins_its_interface_over_an_earlier_unnamed_one() -> None:
    cur = [att(0, "eth0", "cluster", True), att(1, "net1", "default/a"), att(2, "net2", "default/a")]
    ch = changes(cur, [sel("a"), sel("a", "net1")])
    assert ch.empty


def test_rename_is_a_removal_and_an_addition() -> None:
    ch = changes(BASE, [sel("a", "fast0"), sel("b")])
    assert [a.ifname for a in ch.remove] == ["net1"]
    assert [(n.selection.key, n.ifname) for n in ch.add] == [("default/a", "fast0")]


def test_freed_name_can_be_reused_in_the_same_change() -> None:
    ch = changes(BASE, [sel("c", "net1"), sel("b")])
    assert [a.ifname for a in ch.remove] == ["net1"]
    assert [n.ifname for n in ch.add] == ["net1"]


def test_requested_name_taken_by_a_staying_attachment_is_refused() -> None:
    ch = changes(BASE, [sel("a"), sel("b"), sel("c", "net2")])
    assert ch.add == () and [s.key for s, _ in ch.refused] == ["default/c"]
    with pytest.raises(AnnotationError) as e:
        check_refusals(ch)
    assert e.value.code == 7 and "net2" in e.value.msg


def test_generated_name_never_takes_a_requested_one() -> None:
    ch = changes(BASE[:1], [sel("x"), sel("y", "net1")])
    assert sorted((n.selection.key, n.ifname) for n in ch.add) == [("default/x", "net2"), ("default/y", "net1")]


def test_namespaces_distinguish_networks() -> None:
    ch = changes(BASE, [sel("a", ns="other"), sel("b")])
    assert [a.name for a in ch.remove] == ["default/a"]
    assert [n.selection.key for n in ch.add] == ["other/a"]
