"""What one meta-plugin command works with: the request, the config, its seams, the pod, and its clock.

Seams are arguments (after Multus' ``CmdAdd(args, exec, kubeClient)``): the pod/NAD ``Source``
and the ``Runner`` that executes a conflist live on the ``Context``, so scenario tests use a
real API double or a local manifest directory and real namespaces.

The pod's identity comes from CNI_ARGS; its names become API URL path segments and file
names, so ``pod_ref`` refuses anything that is not a Kubernetes name (code 4).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import invoke
from ..k8s.source import Source
from ..spec.args import ignore_unknown
from ..spec.config import ConfList
from ..spec.errors import InvalidEnvironment
from ..spec.request import Request
from ..spec.result import Result
from .plan import Attachment
from .settings import Settings

if TYPE_CHECKING:
    from .config import MultinicConfig  # pydantic: imported when a path needs the full config (``cfg``)


@dataclass
class Runner:
    """Executes one attachment's conflist. Defaults to ``cni.invoke``; tests may wrap it."""

    add: Callable[[Request, ConfList, dict[str, Any]], Result] = invoke.add_list
    delete: Callable[[Request, ConfList, Result | None, dict[str, Any]], None] = invoke.del_list
    check: Callable[[Request, ConfList, Result | None, dict[str, Any]], None] = invoke.check_list
    status: Callable[[Request, ConfList], None] = invoke.status_list
    gc: Callable[[Request, ConfList, list[dict[str, str]]], None] = invoke.gc_list


def annotations_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    """An object's ``metadata.annotations`` (empty when the object, its metadata or its annotations are absent)."""
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def uid_of(obj: dict[str, Any] | None) -> str:
    """An object's ``metadata.uid`` ("" when absent)."""
    return str(((obj or {}).get("metadata") or {}).get("uid", "") or "")


@dataclass
class PodRef:
    namespace: str = ""
    name: str = ""
    uid: str = ""
    pod: dict[str, Any] | None = None

    @property
    def tag(self) -> str:
        """``[ns/name/uid]``: the prefix of every message about this pod (as Multus')."""
        return f"[{self.namespace}/{self.name}/{self.uid}]"

    def tag_for(self, network: str) -> str:
        """``[ns/name/uid:network]``: the prefix of a message about one attachment (Multus' ``cmdPluginErr``)."""
        return f"[{self.namespace}/{self.name}/{self.uid}:{network}]"

    @property
    def known(self) -> bool:
        return bool(self.name)


# When the current CNI command began (``time.monotonic()`` clock). The daemon sets it as a request
# arrives; a runtime's exec (cni.main) sets its process start, so the interpreter's start-up counts
# too; anything else (a library call, a test) starts the clock when its Context is made.
STARTED: ContextVar[float | None] = ContextVar("multinic_command_started", default=None)


def process_started() -> float:
    """This process's start on the monotonic clock (from /proc: fork time, which includes a pyenv shim's exec)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return now
    return now - age if 0 <= age < 3600 else now


def command_started() -> float:
    started = STARTED.get()
    return time.monotonic() if started is None else started


@dataclass
class Context:
    req: Request
    # The validated config, or (DEL from the cache, cni/delegator/settings.py) only the keys DEL reads.
    # Both carry cni_dir/bin_dir/kubeconfig/manifest_dir/node_name/api_timeout; anything else is ``cfg``.
    settings: MultinicConfig | Settings
    source: Source | None
    runner: Runner = field(default_factory=Runner)
    node_name: str = ""
    started: float = field(default_factory=command_started)
    read_deadline: float | None = None  # ADD: when the pod, its NADs and the Node must have been read

    @property
    def cfg(self) -> MultinicConfig:
        """The full validated config, parsed (pydantic) here on first use when only ``Settings`` were read;
        a config that fails validation raises error 7 from this point, as it would have at the start."""
        if isinstance(self.settings, Settings):
            from .config import parse

            self.settings = parse(self.req.config)
        return self.settings

    def base(self, ifname: str) -> Request:
        """The request a network's plugins get: its ifname, CNI_PATH = binDir + the runtime's."""
        path = tuple(dict.fromkeys((self.settings.bin_dir, *self.req.path)))
        return self.req.with_(ifname=ifname, path=path)

    def base_for(self, att: Attachment) -> Request:
        """``base`` for one attachment, with its CNI_ARGS additions (the annotation's ``MAC``/``IP``)."""
        req = self.base(att.ifname)
        extra = att.env_args()
        if not extra:
            return req
        args = dict(req.cni_args)
        if ignore_unknown(args):  # already set by the runtime: keep its spelling
            extra.pop("IgnoreUnknown", None)
        return req.with_(cni_args={**args, **extra})


_POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")  # a Kubernetes object name


def pod_ref(req: Request) -> PodRef:
    """The pod from CNI_ARGS. Names become API URL path segments and file names, so anything
    that is not a Kubernetes name (``..``, ``/``) is refused with code 4."""
    a = req.cni_args
    name = a.get("K8S_POD_NAME", "")
    # podman passes K8S_POD_NAME but no K8S_POD_NAMESPACE: like a manifest without a namespace,
    # such a pod is in "default" (kubelet always passes both).
    namespace = a.get("K8S_POD_NAMESPACE", "") or ("default" if name else "")
    uid = a.get("K8S_POD_UID", "")
    for key, value in (("K8S_POD_NAME", name), ("K8S_POD_NAMESPACE", namespace)):
        if value and not _POD_NAME.match(value):
            raise InvalidEnvironment(f"invalid {key} {value!r} in CNI_ARGS", "expected a Kubernetes object name")
    if uid and not all(c.isalnum() or c == "-" for c in uid):
        raise InvalidEnvironment(f"invalid K8S_POD_UID {uid!r} in CNI_ARGS", "expected a UID like 3f6e0c7a-...")
    return PodRef(namespace, name, uid)


def node_name(cfg: MultinicConfig | Settings) -> str:
    """This node: ``nodeName`` from the config, else ``$NODE_NAME``, else the host name."""
    return cfg.node_name or os.environ.get("NODE_NAME", "") or socket.gethostname()
