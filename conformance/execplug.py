"""Exec a CNI plugin black-box, exactly as libcni does: environment + stdin in, stdout out.

Rules:
- Nothing here knows multinic internals: any binary is driven the same way (the harness must
  be usable against anyone's plugin).
- The environment is the caller's (minus inherited ``CNI_*``) plus the ``CNI_*`` variables of
  the command; ADD/DEL/CHECK get all six, STATUS/GC only ``CNI_COMMAND`` and ``CNI_PATH``,
  VERSION only ``CNI_COMMAND`` (libcni ``Args.AsEnv`` / ``invoke``).
- The plugin runs in the harness's "host" namespace (``ip netns exec``), so what it does to
  its caller's namespace is observable and never touches the real host.
- ``Conflist`` runs a list the way libcni does: ADD in order feeding ``prevResult``, DEL in
  reverse with the final result (≥ 0.4.0), CHECK in order; it stops at the first error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

CNI_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
TIMEOUT = 60.0


def json_docs(raw: bytes) -> tuple[list[Any], str]:
    """All JSON documents in ``raw`` (concatenated/whitespace-separated) and any trailing junk."""
    text = raw.decode("utf-8", "replace")
    dec = json.JSONDecoder()
    docs: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs, ""
        try:
            doc, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return docs, text[i:]
        docs.append(doc)


@dataclass
class Outcome:
    """One plugin execution: what went in and what came out."""

    command: str
    env: dict[str, str]
    stdin: bytes
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float
    label: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def docs(self) -> list[Any]:
        return json_docs(self.stdout)[0]

    @property
    def doc(self) -> Any:
        """The single JSON document on stdout, or None when there is not exactly one."""
        docs, junk = json_docs(self.stdout)
        return docs[0] if len(docs) == 1 and not junk else None

    def brief(self, limit: int = 300) -> str:
        """What the plugin printed (stdout, else stderr), cut to ``limit`` characters, for a failure message."""
        text = (self.stdout or self.stderr).decode("utf-8", "replace").strip()
        return text[:limit] or "(no output)"

    def envelope_problem(self) -> str | None:
        """Why this is not a well-formed CNI error (None when it is)."""
        if self.exit_code == 0:
            return "exit code 0 for an error"
        docs, junk = json_docs(self.stdout)
        if junk:
            return f"stdout is not JSON: {junk[:200]!r}"
        if len(docs) != 1:
            return f"stdout holds {len(docs)} JSON documents, expected exactly one error"
        doc = docs[0]
        if not isinstance(doc, dict):
            return "error document is not a JSON object"
        if not isinstance(doc.get("code"), int) or isinstance(doc.get("code"), bool):
            return f"error 'code' is not an integer: {doc.get('code')!r}"
        if not isinstance(doc.get("msg"), str) or not doc["msg"]:
            return f"error 'msg' is missing or not a non-empty string: {doc.get('msg')!r}"
        if "details" in doc and not isinstance(doc["details"], str):
            return f"error 'details' is not a string: {doc['details']!r}"
        if "cniVersion" in doc and not isinstance(doc["cniVersion"], str):
            return "error 'cniVersion' is not a string"
        return None

    @property
    def code(self) -> int | None:
        doc = self.doc
        return doc.get("code") if isinstance(doc, dict) and isinstance(doc.get("code"), int) else None

    def evidence(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "command": self.command,
            "env": {k: v for k, v in self.env.items() if k.startswith("CNI_")},
            "stdin": self.stdin.decode("utf-8", "replace"),
            "exit_code": self.exit_code,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace")[-4000:],
            "duration_ms": round(self.duration * 1000, 2),
        }


@dataclass
class Call:
    """The ``CNI_*`` arguments of one call (libcni RuntimeConf)."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: str = ""
    omit: tuple[str, ...] = ()  # variables to leave out entirely (to test env validation)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("CNI_")}
        if self.command in ("ADD", "DEL", "CHECK"):
            vals = dict(zip(CNI_VARS, (self.command, self.container_id, self.netns, self.ifname, self.args, self.path), strict=False))
        elif self.command in ("STATUS", "GC"):
            vals = {"CNI_COMMAND": self.command, "CNI_PATH": self.path}
        else:
            vals = {"CNI_COMMAND": self.command}
        for k in self.omit:
            vals.pop(k, None)
        env.update(vals)
        return env


def exec_raw(binary: str, call: Call, stdin: bytes, *, host_netns: str | None, label: str = "") -> Outcome:
    """Exec ``binary`` once; never raises for plugin failures (they are the data)."""
    env = call.env()
    argv = [binary] if host_netns is None else ["ip", "netns", "exec", host_netns, binary]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=TIMEOUT, check=False)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = -9, exc.stdout or b"", (exc.stderr or b"") + f"\n[harness] killed after {TIMEOUT} s".encode()
    except OSError as exc:
        code, out, err = 127, b"", f"[harness] cannot exec {binary}: {exc}".encode()
    return Outcome(call.command, env, stdin, code, out, err, time.monotonic() - start, label)


def encode(config: dict[str, Any] | bytes) -> bytes:
    return config if isinstance(config, bytes) else json.dumps(config).encode()


@dataclass
class Plugin:
    """A single plugin binary."""

    binary: str

    @property
    def name(self) -> str:
        return os.path.basename(self.binary)

    def invoke(self, call: Call, config: dict[str, Any] | bytes, *, host_netns: str | None, label: str = "") -> Outcome:
        return exec_raw(self.binary, call, encode(config), host_netns=host_netns, label=label)


@dataclass
class Conflist:
    """A network configuration list run plugin by plugin as libcni does.

    ``config`` handed to ``invoke`` is the conflist document (``plugins`` list); a raw
    ``bytes`` config goes to the first plugin unchanged (decode-error tests).
    """

    cni_path: tuple[str, ...]
    executed: list[Outcome] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "conflist"

    def find(self, ptype: str) -> str:
        for d in self.cni_path:
            cand = os.path.join(d, ptype)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
        return os.path.join(self.cni_path[0] if self.cni_path else "/nonexistent", ptype)

    def plugin_conf(self, doc: dict[str, Any], index: int, prev: Any) -> dict[str, Any]:
        conf = dict(doc["plugins"][index])
        conf["name"] = doc.get("name", "")
        conf["cniVersion"] = doc.get("cniVersion", "")
        caps = conf.pop("capabilities", None) or {}
        rc = {k: v for k, v in (doc.get("runtimeConfig") or {}).items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        for k, v in doc.items():  # GC's attachment lists go to every plugin (libcni GCNetworkList)
            if k.startswith("cni.dev/"):
                conf[k] = v
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def invoke(self, call: Call, config: dict[str, Any] | bytes, *, host_netns: str | None, label: str = "") -> Outcome:
        if isinstance(config, bytes) or not isinstance(config.get("plugins"), list) or not config["plugins"]:
            first = "" if isinstance(config, bytes) else (config.get("plugins") or [{}])[0].get("type", "")
            return exec_raw(self.find(first or "missing"), call, encode(config), host_netns=host_netns, label=label)
        plugins = config["plugins"]
        order = list(range(len(plugins)))
        if call.command == "DEL":
            order.reverse()
        if call.command in ("VERSION", "STATUS", "GC"):
            last: Outcome | None = None
            for i in order:
                conf = self.plugin_conf(config, i, None)
                out = exec_raw(self.find(conf.get("type", "")), call, encode(conf), host_netns=host_netns, label=label)
                if not out.ok or call.command == "VERSION":
                    return out
                last = out
            assert last is not None
            return last
        prev = config.get("prevResult")  # DEL/CHECK: the final result, set by the harness
        total = 0.0
        last = None
        for i in order:
            conf = self.plugin_conf(config, i, prev)
            out = exec_raw(self.find(conf.get("type", "")), call, encode(conf), host_netns=host_netns, label=label)
            total += out.duration
            if not out.ok:
                out.duration = total
                return out
            if call.command == "ADD":
                prev = out.doc
            last = out
        assert last is not None
        last.duration = total
        return last
