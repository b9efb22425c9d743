#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §4.1.2: ignores the JSON list annotation."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('json-form-ignored'))
