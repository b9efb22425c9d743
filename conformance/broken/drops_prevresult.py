#!/usr/bin/env python3
"""Broken CNI plugin sample (chained). Violates: SPEC §Chained plugins: ignores prevResult's IPs/routes/DNS."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('chained', 'drops-prevresult'))
