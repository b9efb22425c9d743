"""Imports run one way: no cycle between modules, no edge from a lower layer to a higher one.

The layers (cni/ARCHITECTURE.md, "Layers"), lowest first; a module may import its own layer and
the layers below it:

0. base: ``cni.spec`` (pure CNI types), and the standard-library leaves every layer may use —
   ``cni.log``, ``cni.faults``, ``cni.fslock``, ``cni.atomicfile``, ``cni.deadline``, and
   ``cni.registry`` (a table of module *names*: native plugins are imported by name at run time,
   which is the one sanctioned way a lower layer reaches a higher one, as libcni execs a binary).
1. boundaries: ``cni.netns``/``cni.netlink`` (the kernel) and the Kubernetes API library
   ``cni.k8s`` (client, kubeconfig, transport, annotations and NAD parsing, the pod ``Source``) —
   whereabouts' CRD store needs the client, so it sits below the plugins, like netlink.
2. ``cni.plugin``, ``cni.invoke``, ``cni.skel``: the plugin shape, delegation, the dispatcher.
3. ``plugins``, ``ipam``.
4. ``cni.delegator``.
5. the faces: ``cni.daemon``, ``cni.k8s.webhook``, ``cni.admin``, ``cni.main``, ``cni.demo``, ``conformance``,
   ``packaging`` (the programs that put the rest together; nothing imports them).

Every import counts, also one inside a function or under ``TYPE_CHECKING``: deferring an import
saves start-up time, it does not change which way the code depends.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cni", "plugins", "ipam", "conformance", "packaging")

# (layer name, module prefixes); the longest matching prefix decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("cni", "cni.spec", "cni.log", "cni.faults", "cni.fslock", "cni.atomicfile", "cni.deadline",
              "cni.registry")),
    ("boundaries", ("cni.netns", "cni.netlink", "cni.k8s")),
    ("plugin/invoke", ("cni.plugin", "cni.invoke", "cni.skel")),
    ("plugins/ipam", ("plugins", "ipam")),
    ("delegator", ("cni.delegator",)),
    ("faces", ("cni.daemon", "cni.k8s.webhook", "cni.admin", "cni.main", "cni.__main__", "cni.demo", "conformance",
               "packaging")),
]

# Cycles tolerated for now: none (the conformance harness' checks/runner/model cycle was broken by
# conformance/context.py).
EXEMPT_CYCLES: set[frozenset[str]] = set()


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the product packages."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def imports_of(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The known modules ``source`` imports (``from pkg import sub`` counts as ``pkg.sub`` when that is a module)."""
    known = set(known)
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            for a in node.names:
                sub = f"{pkg}.{a.name}"
                targets.add(sub if sub in known else pkg)
    out: set[str] = set()
    for t in targets:
        while t and t not in known:  # ``import cni.k8s.client.x`` style attribute paths: the module that exists
            t = t.rpartition(".")[0]
        if t and t != module:
            out.add(t)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {m: imports_of(m, f.read_text(), f.name == "__init__.py", files) for m, f in files.items()}


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return None if best is None else best[1]


def upward_edges(graph: Mapping[str, set[str]],
                 layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    """Every import from a lower layer into a higher one, as readable lines."""
    bad = []
    for mod, targets in sorted(graph.items()):
        lo = layer_of(mod, layers)
        for t in sorted(targets):
            hi = layer_of(t, layers)
            if lo is not None and hi is not None and hi > lo:
                bad.append(f"{mod} ({layers[lo][0]}) imports {t} ({layers[hi][0]})")
    return bad


def cycles(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    missing = sorted(m for m in graph if layer_of(m) is None)
    assert not missing, f"give these modules a layer in LAYERS and in cni/ARCHITECTURE.md: {missing}"


def test_no_import_goes_up_a_layer(graph: dict[str, set[str]]) -> None:
    bad = upward_edges(graph)
    assert not bad, "imports from a lower layer into a higher one:\n" + "\n".join(bad)


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    found = [sorted(c) for c in cycles(graph) if frozenset(c) not in EXEMPT_CYCLES]
    assert not found, f"import cycles: {found}"


def test_the_graph_sees_deferred_and_relative_imports(graph: dict[str, set[str]]) -> None:
    # A sanity floor: the checks above would pass vacuously on a graph that missed these.
    assert "cni.deadline" in graph["cni.delegator.core"]  # from ..deadline import deadline
    assert "cni.delegator.routes" in graph["cni.delegator.core"]  # inside a function: from . import routes
    assert "cni.k8s.client" in graph["ipam.whereabouts.store_k8s"]  # absolute
    assert "cni.delegator.entry" in graph["cni.main"]  # deferred, in a handler


def private_names_imported(module: str, source: str, is_package: bool, known: Iterable[str]) -> list[str]:
    """``from X import _name`` where ``_name`` is not a module: a private helper used outside its module, which
    belongs in a public home instead (a private *module*, ``plugins/_iface.py``, is a package's shared helper)."""
    known = set(known)
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[:len(base) - (node.level - 1)]
            pkg = ".".join(base + ([node.module] if node.module else []))
        else:
            pkg = node.module or ""
        for a in node.names:
            if a.name.startswith("_") and not a.name.startswith("__") and f"{pkg}.{a.name}" not in known:
                out.append(f"{module} imports {a.name} from {pkg}")
    return out


def test_no_module_imports_another_modules_private_helper() -> None:
    files = module_files()
    bad = [line for m, f in files.items() for line in private_names_imported(m, f.read_text(), f.name == "__init__.py",
                                                                             files)]
    assert not bad, "give these a public name where they belong:\n" + "\n".join(bad)


def test_the_private_name_check_tells_a_helper_from_a_private_module() -> None:
    known = {"plugins", "plugins._iface", "plugins.bridge", "cni.delegator.core", "cni.delegator.hotplug"}
    assert private_names_imported("plugins.bridge", "from . import _iface\nfrom ._iface import create_in_pod\n",
                                  False, known) == []
    assert private_names_imported("cni.delegator.hotplug", "from .core import _conf_json, to_wire_safe\n", False,
                                  known) == ["cni.delegator.hotplug imports _conf_json from cni.delegator.core"]


# ---- the checks themselves, on made-up graphs -----------------------------------------------------------------------


def test_a_lower_layer_importing_a_higher_one_is_reported() -> None:
    synthetic = {
        "cni.spec.result": {"cni.delegator.core"},  # upward: base -> delegator
        "cni.delegator.core": {"cni.spec.result", "plugins.macvlan"},  # downward: fine
        "plugins.macvlan": {"cni.netlink"},
        "cni.k8s.source": {"cni.k8s.webhook"},  # a library reaching into a face
    }
    assert upward_edges(synthetic) == [
        "cni.k8s.source (boundaries) imports cni.k8s.webhook (faces)",
        "cni.spec.result (base) imports cni.delegator.core (delegator)",
    ]


def test_a_cycle_is_reported_and_a_chain_is_not() -> None:
    chain = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert cycles(chain) == []
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert [sorted(c) for c in cycles(loop)] == [["a", "b", "c"]]


def test_an_introduced_bad_edge_in_a_real_module_tree_fails(tmp_path: Path) -> None:
    """End to end on files: parse a tree where the spec imports the delegator, lazily, inside a function."""
    (tmp_path / "cni" / "spec").mkdir(parents=True)
    (tmp_path / "cni" / "delegator").mkdir()
    for pkg in ("cni", "cni/spec", "cni/delegator"):
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "cni" / "spec" / "result.py").write_text("def f():\n    from ..delegator import core\n")
    (tmp_path / "cni" / "delegator" / "core.py").write_text("from ..spec import result\n")
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir()
    g = import_graph(tmp_path)
    assert g["cni.spec.result"] == {"cni.delegator.core"}
    assert upward_edges(g) == ["cni.spec.result (base) imports cni.delegator.core (delegator)"]
    assert [sorted(c) for c in cycles(g)] == [["cni.delegator.core", "cni.spec.result"]]
