#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §5 / Device Info Spec: writes a device-info without version or type fields."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('bad-device-info'))
