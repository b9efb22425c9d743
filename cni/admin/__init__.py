"""The node admin's tools: ``multinic status | inspect | doctor | leaks | logs``.

Rules of this package:
- Read-only, except ``leaks --fix``, which removes leftovers only through the plugins' own DEL
  paths (the meta-plugin's DEL from the attachment cache, host-local / whereabouts / portmap DEL
  for the exact owner a record names) and reports each removal; what no record attributes to a
  container is reported, never removed.
- Human tables by default, ``-o json`` for scripts (one JSON document on stdout).
- Exit codes are the same for every command (``common.EXIT_*``): 0 all well, 1 problems found
  (a doctor FAIL, a leak left, a failing CHECK, a sandbox whose netns is gone), 2 bad usage,
  3 the multinic conf cannot be found or read, 4 the pod asked for is unknown.
- This package sits at the top of the import order (like ``cni.daemon``): it may import the
  delegator, plugins and IPAM, and nothing imports it but ``cni.main``.
"""
