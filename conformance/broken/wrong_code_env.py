#!/usr/bin/env python3
"""Broken CNI plugin sample (interface). Violates: SPEC §Error codes: missing env is reported as 7, not 4."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('interface', 'wrong-code-env'))
