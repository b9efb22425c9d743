#!/usr/bin/env python3
"""Broken CNI plugin sample (ipam). Violates: SPEC §GC: reads only cni.dev/attachments, so valid-attachments-only GC frees everything."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('ipam', 'gc-old-key-only'))
