#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: CNI SPEC §DEL: keeps each pod's attachment cache file after its DEL."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('keeps-cache'))
