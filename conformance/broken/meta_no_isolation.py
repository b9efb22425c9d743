#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §7.4: lets a pod use a NAD of another namespace under namespace isolation."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('no-isolation'))
