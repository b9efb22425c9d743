"""Thick mode: a long-lived node daemon (server.py) and the cheap CNI shim (shim.py) that forwards to it."""
