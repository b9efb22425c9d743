#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §3.4.1: takes the first file named like the NAD, a .conf before the .conflist."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('conf-before-conflist'))
