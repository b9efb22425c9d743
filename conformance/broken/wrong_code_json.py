#!/usr/bin/env python3
"""Broken CNI plugin sample (interface). Violates: SPEC §Error codes: undecodable stdin is reported as 999, not 6."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('interface', 'wrong-code-json'))
