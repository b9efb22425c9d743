#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §5: network-status describes the result's first interface even when it is host-side."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('status-host-iface'))
