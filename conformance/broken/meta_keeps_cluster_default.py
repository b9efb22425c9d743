#!/usr/bin/env python3
"""Broken meta-plugin sample (multinet). Violates: NPWG §4.1.2.1.9: adds the requested default route but keeps the cluster network's."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from _toymeta import main  # noqa: E402

sys.exit(main('keeps-cluster-default'))
