"""Native plugin types → the module defining their ``PLUGIN``. Imports nothing.

Kept apart from ``cni.invoke`` so that ``main`` can dispatch on argv[0] (and answer VERSION)
without importing the spec/result machinery: the per-exec start-up budget.
Module names are the type with ``-`` → ``_`` (rule 6, cni/ARCHITECTURE.md).
"""

NATIVE: dict[str, str] = {
    "macvlan": "plugins.macvlan",
    "ipvlan": "plugins.ipvlan",
    "bridge": "plugins.bridge",
    "sbr": "plugins.sbr",
    "tuning": "plugins.tuning",
    "portmap": "plugins.portmap",
    "host-local": "ipam.host_local",
    "static": "ipam.static",
    "whereabouts": "ipam.whereabouts",
}
