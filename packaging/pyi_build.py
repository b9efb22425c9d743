"""Build the PyInstaller bundle once per source state, for tests and measurements.

``cached_build()`` runs ``packaging/multinic.spec`` into ``$TMPDIR/multinic-pyi/<digest>/`` where the
digest covers every source file, the spec and the PyInstaller version: a test session (or a second
``make test``) with unchanged sources reuses the bundle instead of paying the build (≈ 40–90 s
here). Older builds are pruned. Returns None when PyInstaller is not installed (dev extras).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "multinic.spec"
SOURCES = ("cni", "plugins", "ipam", "conformance", "packaging")


def pyinstaller_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pyinstaller")
    except Exception:  # noqa: BLE001 - not installed
        return None


def source_digest(onefile: bool) -> str:
    h = hashlib.sha256(f"{pyinstaller_version()} {sys.version} onefile={onefile}".encode())
    for base in SOURCES:
        for p in sorted((ROOT / base).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".spec", ".yaml") and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(tempfile.gettempdir()) / "multinic-pyi"


def cached_build(onefile: bool = False, timeout: float = 600) -> Path | None:
    """The built executable (onedir: ``<dist>/multinic/multinic``; onefile: ``<dist>/multinic``)."""
    if pyinstaller_version() is None:
        return None
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = ("onefile-" if onefile else "onedir-") + source_digest(onefile)
    out = root / key
    exe = out / "dist" / "multinic" if onefile else out / "dist" / "multinic" / "multinic"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions must not build into the same place
        if exe.exists() and (out / "ok").exists():
            return exe
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        env = dict(os.environ, MULTINIC_ONEFILE="1" if onefile else "0")
        env.pop("PYTHONPATH", None)
        r = subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                            "--distpath", str(out / "dist"), "--workpath", str(out / "build"), str(SPEC)],
                           # Not cwd=ROOT: ``-m`` puts the cwd first on sys.path, and our ``packaging``
                           # directory would hide PyPI's ``packaging`` that PyInstaller imports.
                           cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"PyInstaller failed:\n{r.stderr[-4000:]}")
        shutil.rmtree(out / "build", ignore_errors=True)
        (out / "ok").write_text("")
        kind = key.split("-")[0]
        for old in root.iterdir():  # keep one build per kind
            if old.is_dir() and old.name.startswith(kind + "-") and old.name != key:
                shutil.rmtree(old, ignore_errors=True)
        return exe


def existing_build() -> Path | None:
    """The onedir build for the current sources if one is already there (no build)."""
    if pyinstaller_version() is None:
        return None
    exe = cache_root() / ("onedir-" + source_digest(False)) / "dist" / "multinic" / "multinic"
    return exe if exe.exists() and (exe.parent.parent.parent / "ok").exists() else None
