#!/usr/bin/env python3
"""Broken CNI plugin sample (ipam). Violates: SPEC §STATUS: STATUS fails with 999 instead of 0/50/51."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('ipam', 'status-fails'))
