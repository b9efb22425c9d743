"""CNI errors: one small tree whose classes carry their wire code.

PURE: no I/O. CNI SPEC "Error" section: codes 1-99 are reserved by the spec
(1-8, 11, 50, 51 defined; libcni adds 999 for internal errors); 100+ are
plugin-specific. Every failure a plugin reports becomes one of these, and
``cni.skel`` is the single place that turns any exception into the error
JSON written to stdout.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time; annotations are strings here
if TYPE_CHECKING:
    from typing import Any


class CNIError(Exception):
    """A failure with a CNI error code, a message and optional details."""

    code: int = 999
    # Set by code that already wrote this error to the log with more context, so that
    # ``cni.skel`` does not log it a second time.
    logged: bool = False

    def __init__(self, msg: str, details: str = "", *, code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_wire(self, cni_version: str) -> dict[str, Any]:
        """The error object of the spec ("Error" section)."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def prefixed(self, prefix: str) -> CNIError:
        """The same error (same class and code) with context put in front of the message."""
        err = type(self).__new__(type(self))
        CNIError.__init__(err, f"{prefix}{self.msg}", self.details, code=self.code)
        return err


class IncompatibleVersion(CNIError):
    code = 1


class UnsupportedField(CNIError):
    code = 2


class UnknownContainer(CNIError):
    code = 3


class InvalidEnvironment(CNIError):
    code = 4


class IOFailure(CNIError):
    code = 5


class DecodeFailure(CNIError):
    code = 6


class InvalidConfig(CNIError):
    code = 7


class InvalidNetns(CNIError):
    code = 8


class TryAgainLater(CNIError):
    code = 11


class PluginNotAvailable(CNIError):
    code = 50


class LimitedConnectivity(CNIError):
    code = 51


class InternalError(CNIError):
    code = 999


# ---- multinic's own codes (100+) -------------------------------------------


class InterfaceExists(CNIError):
    """CNI_IFNAME (or a requested interface name) is already present in the netns."""

    code = 100


class AddressExhausted(CNIError):
    """No free address is left in the configured range(s)."""

    code = 101


class PolicyDenied(CNIError):
    """Namespace isolation, a NAD node selector or the plugin allowlist refused the request."""

    code = 102


class NotFound(CNIError):
    """A referenced object (NAD, pod, master interface, plugin binary) does not exist."""

    code = 103


class ExternalPluginFailed(CNIError):
    """An exec'd plugin failed without a usable error document."""

    code = 104


class KernelError(CNIError):
    """A netlink or sysctl operation failed in a way no more specific class describes."""

    code = 105


class CheckFailed(CNIError):
    """CHECK found the container's networking differs from prevResult (link, address or route missing/changed)."""

    code = 106


BY_CODE: dict[int, type[CNIError]] = {
    cls.code: cls
    for cls in (
        IncompatibleVersion, UnsupportedField, UnknownContainer, InvalidEnvironment, IOFailure,
        DecodeFailure, InvalidConfig, InvalidNetns, TryAgainLater, PluginNotAvailable,
        LimitedConnectivity, InternalError, InterfaceExists, AddressExhausted, PolicyDenied,
        NotFound, ExternalPluginFailed, KernelError, CheckFailed,
    )
}


def from_wire(doc: dict[str, Any]) -> CNIError:
    """Rebuild an error from a plugin's error JSON, keeping its code even when we have no class for it."""
    raw_code = doc.get("code", 999)
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else 999
    cls = BY_CODE.get(code, CNIError)
    return cls(str(doc.get("msg", "")), str(doc.get("details", "") or ""), code=code)
