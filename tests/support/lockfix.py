"""Real leftovers of the per-sandbox lock (cni.delegator.sandbox_lock) for the tests that sweep them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KILLED_HOLDER = """
import os, signal, sys
from cni.delegator import sandbox_lock
with sandbox_lock.held(sys.argv[1], sys.argv[2], "CNI DEL"):
    os.kill(os.getpid(), signal.SIGKILL)  # killed before it could remove its lock file
"""


def killed_holder_leftover(cache: Path, cid: str, age: float) -> Path:
    """The lock file a real process killed while holding the sandbox leaves, last taken ``age`` seconds ago."""
    p = subprocess.run([sys.executable, "-c", KILLED_HOLDER, str(cache), cid], cwd=ROOT, check=False, timeout=30)
    assert p.returncode == -signal.SIGKILL
    lock = cache / ".locks" / cid
    assert lock.exists() and not (cache / cid).exists()
    t = time.time() - age
    os.utime(lock, (t, t))
    return lock
