"""doctor's pure parts, the version the shim and daemon report, and the metric list the README and dashboard keep."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import yaml

from cni import __version__
from cni.admin import doctor
from cni.daemon import shim
from cni.daemon.metrics import Metrics
from cni.daemon.server import Limiter

ROOT = Path(__file__).resolve().parents[3]


def test_what_doctor_asks_rbac_for_is_exactly_the_node_role() -> None:
    docs = yaml.safe_load_all((ROOT / "packaging" / "manifests" / "rbac.yaml").read_text())
    role = next(d for d in docs if d and d.get("kind") == "ClusterRole" and d["metadata"]["name"] == "multinic")
    granted = {(v, g, r) for rule in role["rules"] for v in rule["verbs"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    assert set(doctor.NEEDED) == granted and len(doctor.NEEDED) == len(granted)


def _b64(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_jwt_expiry() -> None:
    assert doctor.jwt_expiry(f"{_b64({'alg': 'RS256'})}.{_b64({'exp': 1700000000})}.sig") == 1700000000
    assert doctor.jwt_expiry(f"{_b64({})}.{_b64({'sub': 'x'})}.sig") is None  # no exp: never expires
    assert doctor.jwt_expiry("test-token-0123456789") is None
    assert doctor.jwt_expiry("a.!!!.c") is None
    assert doctor.jwt_expiry(f"{_b64({})}.{_b64({'exp': True})}.sig") is None


def test_the_shim_and_the_daemon_report_the_package_version() -> None:
    assert shim.VERSION == __version__
    text = Metrics().render(Limiter(1, 1))
    assert doctor.metric_label(text, "multinic_build_info", "version") == __version__


def rendered_metrics() -> set[str]:
    m = Metrics()
    m.observe("ADD", 0.01, 0)
    m.observe("DEL", 0.2, 11)
    text = m.render(Limiter(1, 1))
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
    return names


def test_every_daemon_metric_is_documented_in_the_readme_and_on_the_dashboard() -> None:
    names = rendered_metrics()
    assert "multinic_cni_requests_total" in names and "process_resident_memory_bytes" in names
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operating multinic"):]
    dashboard = json.loads((ROOT / "packaging" / "manifests" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for name in names:
        assert f"`{name}`" in section, f"README does not list {name}"
        assert re.search(rf"\b{name}(_bucket|_sum|_count)?\b", exprs), f"the dashboard does not graph {name}"
    # ... and graphs nothing the daemon does not export.
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\b((?:multinic|process)_[a-z_]+)", exprs)}
    assert used <= names, used - names
