"""The multinic meta-plugin configuration: Multus keys plus ours. PURE.

Every key a Multus user brings keeps its name and meaning (Multus' configuration reference,
https://github.com/k8snetworkplumbingwg/multus-cni/blob/master/docs/configuration.md). Ours:
- ``allowedPluginTypes``: plugin types a NAD may use (default: the product document's list plus the
  cluster network's own types);
- ``manifestDir``: a directory of Pod / NetworkAttachmentDefinition / Node manifests that
  stands in for the Kubernetes API when there is no cluster (demo, podman users);
- ``nodeName``: this node (else ``NODE_NAME`` from the environment, else the host name);
- ``apiTimeoutSeconds``: the budget for API calls on the ADD path (fail fast with code 11);
- multi-tenant policy (``cni.delegator.tenancy`` has the rules and defaults): ``hostPortPolicy``,
  ``allowedPaths``, ``allowedMasters``, ``allowedBridges``, ``hostNetworkChanges``, and
  ``multinicPolicy`` (the same keys per namespace), ``policyProfiles`` (the same keys per profile, chosen by a
  Namespace's ``multinic.io/policy`` label). Checked when the config is loaded (error 7
  naming the key), not when a pod first needs them.
"""

# No ``from __future__ import annotations``: real annotations spare pydantic a ForwardRef compile() per
# field at class creation (see plugins/_confs.py).
from typing import Any

from pydantic import Field, PrivateAttr, field_validator

from ..spec.model import Model, validate
from . import tenancy
from .settings import DEFAULT_BIN_DIR, DEFAULT_CNI_DIR, DEFAULT_CONF_DIR


class LogOptions(Model):
    max_age: float = Field(5, alias="maxAge", ge=0)
    max_size: float = Field(100, alias="maxSize", ge=0)
    max_backups: int = Field(5, alias="maxBackups", ge=0)
    compress: bool = True


class MultinicConfig(Model):
    cni_version: str = Field("1.0.0", alias="cniVersion")
    name: str = "multinic-cni-network"
    type: str = "multinic"
    kubeconfig: str = ""
    cluster_network: str = Field("", alias="clusterNetwork")
    default_networks: list[str] = Field([], alias="defaultNetworks")
    delegates: list[dict[str, Any]] = Field([])
    conf_dir: str = Field(DEFAULT_CONF_DIR, alias="confDir")
    cni_dir: str = Field(DEFAULT_CNI_DIR, alias="cniDir")
    bin_dir: str = Field(DEFAULT_BIN_DIR, alias="binDir")
    log_file: str = Field("", alias="logFile")
    log_level: str = Field("panic", alias="logLevel", pattern=r"(?i)^(panic|error|verbose|debug)?$")
    log_to_stderr: bool = Field(False, alias="logToStderr")
    log_options: LogOptions = Field(default_factory=lambda: LogOptions.model_validate({}), alias="logOptions")
    readiness_indicator_file: str = Field("", alias="readinessindicatorfile")
    readiness_timeout: float = Field(45.0, alias="readinessTimeoutSeconds", ge=0)
    namespace_isolation: bool = Field(False, alias="namespaceIsolation")
    global_namespaces: str = Field("", alias="globalNamespaces")
    system_namespaces: list[str] | str = Field(default_factory=lambda: ["kube-system"], alias="systemNamespaces")
    multus_namespace: str = Field("kube-system", alias="multusNamespace")
    retry_delete_on_error: bool = Field(False, alias="retryDeleteOnError")
    allowed_plugin_types: list[str] | None = Field(None, alias="allowedPluginTypes")
    manifest_dir: str = Field("", alias="manifestDir")
    # Thick mode only: the daemon adds and removes a running pod's secondary interfaces when its networks
    # annotation changes (cni.daemon.dynamic). A thin exec has nothing that outlives the call to do it.
    dynamic_networks: bool = Field(False, alias="dynamicNetworks")
    node_name: str = Field("", alias="nodeName")
    api_timeout: float = Field(5.0, alias="apiTimeoutSeconds", gt=0, le=60)
    runtime_config: dict[str, Any] = Field({}, alias="runtimeConfig")
    # Multi-tenant policy: raw here, parsed (and validated) into ``policies`` by cni.delegator.tenancy.
    host_port_policy: list[Any] | None = Field(None, alias="hostPortPolicy")
    allowed_paths: list[Any] | None = Field(None, alias="allowedPaths")
    allowed_masters: list[Any] | None = Field(None, alias="allowedMasters")
    allowed_bridges: list[Any] | None = Field(None, alias="allowedBridges")
    host_network_changes: list[Any] | None = Field(None, alias="hostNetworkChanges")
    multinic_policy: dict[str, Any] | None = Field(None, alias="multinicPolicy")
    policy_profiles: dict[str, Any] | None = Field(None, alias="policyProfiles")
    _policies: tenancy.Policies = PrivateAttr(default_factory=tenancy.Policies)

    def model_post_init(self, context: Any, /) -> None:
        self._policies = tenancy.policies(self.policy_doc(), self.multus_namespace)

    def policy_doc(self) -> dict[str, Any]:
        """The tenancy keys as written (absent and null both mean the default)."""
        doc = {k: getattr(self, a) for k, a in (
            ("hostPortPolicy", "host_port_policy"), ("allowedPaths", "allowed_paths"),
            ("allowedMasters", "allowed_masters"), ("allowedBridges", "allowed_bridges"),
            ("hostNetworkChanges", "host_network_changes"), ("multinicPolicy", "multinic_policy"),
            ("policyProfiles", "policy_profiles"))}
        return {k: v for k, v in doc.items() if v is not None}

    @property
    def policies(self) -> tenancy.Policies:
        return self._policies

    @field_validator("kubeconfig", "conf_dir", "cni_dir", "bin_dir", "log_file", "readiness_indicator_file",
                     "manifest_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # Relative paths would resolve against whatever directory the runtime execs us from.
        if v and not v.startswith("/"):
            raise ValueError(f"must be an absolute path, got {v!r}")
        return v

    def global_ns(self) -> list[str]:
        return [n.strip() for n in self.global_namespaces.split(",") if n.strip()]

    def system_ns(self) -> list[str]:
        if isinstance(self.system_namespaces, str):
            return [n.strip() for n in self.system_namespaces.split(",") if n.strip()]
        return list(self.system_namespaces)


def parse(conf: dict[str, Any]) -> MultinicConfig:
    return validate(MultinicConfig, conf)
