#!/usr/bin/env python3
"""Broken CNI plugin sample (interface). Violates: SPEC §DEL: leaves a veth pair in the caller's namespace on its first successful ADD only."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('interface', 'leaks-once'))
