#!/usr/bin/env python3
"""Broken CNI plugin sample (interface). Violates: SPEC §Error codes: an invalid field is 999, not 7."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('interface', 'invalid-config-999'))
