"""Generate the node's CNI config (``00-multinic.conflist``) from the cluster network's config.

The first config in the CNI config directory (sorted, ours excluded) is the cluster network;
it becomes ``delegates[0]`` and its plugins' capabilities are declared on ours so the runtime
passes their runtimeConfig (portMappings, bandwidth …) through. The file is rewritten
atomically, only when its content changes, and never deleted (Multus #1527).
"""

from __future__ import annotations

import os
import threading
from typing import Any

OUR_FILE = "00-multinic.conflist"


def primary_config(conf_dir: str) -> tuple[str, dict[str, Any]] | None:
    from ..spec.config import decode

    try:
        names = sorted(os.listdir(conf_dir))
    except OSError:
        return None
    for fn in names:
        if fn == OUR_FILE or not fn.endswith((".conf", ".conflist", ".json")):
            continue
        try:
            with open(os.path.join(conf_dir, fn), "rb") as f:
                doc = decode(f.read(), fn)
        except Exception:  # noqa: BLE001 - skip unreadable/partial files, as kubelet does
            continue
        if doc.get("type") in ("multinic", "multinic-shim") or any(
                p.get("type") in ("multinic", "multinic-shim") for p in doc.get("plugins") or [] if isinstance(p, dict)):
            continue
        return fn, doc
    return None


def generate(primary: dict[str, Any], shim_type: str = "multinic-shim", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The conflist for our plugin with ``primary`` as the cluster network. PURE."""
    listed = primary.get("plugins")
    plugins: list[Any] = listed if isinstance(listed, list) else [primary]
    caps: dict[str, bool] = {}
    for p in plugins:
        for k, v in (p.get("capabilities") or {}).items():
            if v:
                caps[k] = True
    version = str(primary.get("cniVersion") or "1.0.0")
    conf: dict[str, Any] = {"type": shim_type, "delegates": [primary]}
    if caps:
        conf["capabilities"] = caps
    conf.update(extra or {})
    return {"cniVersion": version, "name": "multinic-cni-network", "plugins": [conf]}


def write_if_changed(conf_dir: str, doc: dict[str, Any]) -> bool:
    import orjson

    from ..atomicfile import atomic_write

    path = os.path.join(conf_dir, OUR_FILE)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=0o644)  # the runtime reads it; it holds no secrets
    return True


class Watcher:
    """Regenerate the config when the cluster network's file changes (polling: no inotify in stdlib)."""

    def __init__(self, conf_dir: str, shim_type: str, extra_file: str = "", interval: float = 2.0) -> None:
        self.conf_dir, self.shim_type, self.interval = conf_dir, shim_type, interval
        self.extra: dict[str, Any] = {}
        if extra_file:
            from ..spec.config import decode

            with open(extra_file, "rb") as f:
                self.extra = decode(f.read(), extra_file)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="autoconf")

    def sync(self) -> bool:
        found = primary_config(self.conf_dir)
        if found is None:
            return False
        return write_if_changed(self.conf_dir, generate(found[1], self.shim_type, self.extra))

    def _run(self) -> None:
        while not self.stop_ev.is_set():
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep watching; the old file stays valid
                pass
            self.stop_ev.wait(self.interval)

    def start(self) -> None:
        self.sync()
        self.thread.start()

    def stop(self) -> None:
        self.stop_ev.set()
