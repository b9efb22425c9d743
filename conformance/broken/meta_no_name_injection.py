#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §3.4.2: passes a nameless spec.config on without the NAD's name."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('no-name-injection'))
