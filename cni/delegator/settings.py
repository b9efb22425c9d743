"""What DEL from the attachment cache reads of the multinic config, without pydantic. PURE.

Why: a thin DEL is one exec per pod, and validating the whole ``MultinicConfig`` (pydantic, its
schema built on first use, the tenancy policies parsed) costs more than the DEL's own work. DEL
from a good cache needs only where the cache is, where external plugins are and how to reach the
pod source (to clear network-status): the keys below.

Rules:
- Keys are read as the pydantic model reads them (cni/spec/gojson.py: Go's case folding, the
  last key wins, ``null`` = absent), with the same types and checks (absolute paths, a number
  in (0, 60] for ``apiTimeoutSeconds``, no coercion). A key that is malformed gives None: the
  caller then parses the full config, which reports it as error 7, exactly as before.
- Other keys are not looked at: a DEL whose config went bad in a key DEL does not use still
  cleans up (SPEC: DEL should tolerate a missing or partial config); ADD validated it all.
- Anything beyond these keys (rebuilding the plan when the cache is missing or damaged, the
  policies) goes through ``Context.cfg``, which parses the full config on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec import gojson

DEFAULT_CONF_DIR = "/etc/cni/multus/net.d"
DEFAULT_CNI_DIR = "/var/lib/cni/multus"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_API_TIMEOUT = 5.0
MAX_API_TIMEOUT = 60.0

_PATHS = ("cniDir", "binDir", "kubeconfig", "manifestDir")
# JSON name → nilable (all are Go strings/float64: null has no effect), as MultinicConfig declares them.
_FIELDS = {**dict.fromkeys(_PATHS, False), "nodeName": False, "apiTimeoutSeconds": False}


@dataclass(frozen=True)
class Settings:
    """The config keys DEL from the cache uses; the attribute names are MultinicConfig's."""

    cni_dir: str = DEFAULT_CNI_DIR
    bin_dir: str = DEFAULT_BIN_DIR
    kubeconfig: str = ""
    manifest_dir: str = ""
    node_name: str = ""
    api_timeout: float = DEFAULT_API_TIMEOUT


def for_delete(conf: dict[str, Any]) -> Settings | None:
    """The DEL keys of a multinic config, or None when one of them is malformed."""
    doc = gojson.match_keys(conf, _FIELDS)
    defaults = {"cniDir": DEFAULT_CNI_DIR, "binDir": DEFAULT_BIN_DIR, "kubeconfig": "", "manifestDir": "", "nodeName": ""}
    out: dict[str, str] = {}
    for key, default in defaults.items():
        val = doc.get(key, default)
        if not isinstance(val, str) or (key in _PATHS and val and not val.startswith("/")):
            return None
        out[key] = val
    timeout = doc.get("apiTimeoutSeconds", DEFAULT_API_TIMEOUT)
    # Go float64: any JSON number, never a bool; MultinicConfig: gt=0, le=60.
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_API_TIMEOUT:
        return None
    return Settings(cni_dir=out["cniDir"], bin_dir=out["binDir"], kubeconfig=out["kubeconfig"],
                    manifest_dir=out["manifestDir"], node_name=out["nodeName"], api_timeout=float(timeout))
