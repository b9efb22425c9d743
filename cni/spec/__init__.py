"""The CNI specification as pure data: versions, errors, configs, results, CNI_ARGS.

PURE: nothing in this package imports pyroute2, socket, subprocess or does I/O.
"""
