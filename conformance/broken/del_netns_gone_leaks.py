#!/usr/bin/env python3
"""Broken CNI plugin sample (ipam). Violates: SPEC §DEL: keeps the address when the netns is gone."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toy import main  # noqa: E402

sys.exit(main('ipam', 'del-netns-gone-leaks'))
