"""Multus-compatible logging: ``<RFC3339 time> [<level>] <message>`` to a file and/or stderr.

Rules:
- Levels, most to least severe: panic < error < verbose < debug (Multus ``logLevel``); a
  line is written when its level is at or above the configured one. Warnings are error-level
  lines prefixed ``warning: `` as Multus writes them.
- Never stdout: stdout belongs to the CNI result (only ``cni.skel`` writes it).
- Secrets never reach a log: bearer tokens, ``token``/``password``/key material are masked
  in every line, whatever the caller passes.
- Rotation is by size, lumberjack-style as Multus does it (``logOptions``: maxSize MB,
  maxBackups, maxAge days, compress → gzip backups). Many plugin processes append to one
  file: lines are single O_APPEND writes and rotation is done under an flock.
- Import cost matters on the per-exec path: no ``logging``, no ``re`` until a line is written.
"""

from __future__ import annotations

import os
import sys
import time
from contextvars import ContextVar

TYPE_CHECKING = False  # dataclasses/typing cost ~40 ms at start-up; this module is on every exec path
if TYPE_CHECKING:
    import re
    from typing import Any, TextIO

LEVELS = {"panic": 0, "error": 1, "verbose": 2, "debug": 3}


class Options:
    """Rotation settings (Multus ``logOptions``): MB, count, days, gzip."""

    def __init__(self, max_size_mb: float = 100.0, max_backups: int = 5, max_age_days: float = 5.0,
                 compress: bool = True) -> None:
        self.max_size_mb = max_size_mb
        self.max_backups = max_backups
        self.max_age_days = max_age_days
        self.compress = compress


class _Settings:
    __slots__ = ("path", "level", "to_stderr", "options")

    def __init__(self, path: str | None = None, level: int = LEVELS["panic"], to_stderr: bool = False,
                 options: Options | None = None) -> None:
        self.path = path
        self.level = level
        self.to_stderr = to_stderr
        self.options = options or Options()

    def copy(self) -> _Settings:
        return _Settings(self.path, self.level, self.to_stderr, self.options)


# True in a context that must not share log settings with others: a daemon request thread, where
# two pods' configs may name different log files or levels (``scoped()``).
_SCOPED: ContextVar[bool] = ContextVar("multinic_log_scoped", default=False)


def scoped() -> None:
    """From here on in this context (a thread), ``configure`` changes this context's settings only."""
    _SCOPED.set(True)


class Logger:
    """One log destination set. Module-level ``default`` is what most code uses.

    Settings live in the process (``_base``) unless ``scoped()`` was called in the current context:
    then ``configure`` gives that context its own copy, so concurrent daemon requests never log
    to each other's files or at each other's levels.
    """

    def __init__(self) -> None:
        self._base = _Settings()
        self._local: ContextVar[_Settings | None] = ContextVar(f"multinic_log_{id(self)}", default=None)
        self.stderr: TextIO = sys.stderr
        self.prefix = ""

    def _s(self) -> _Settings:
        return self._local.get() or self._base

    @property
    def path(self) -> str | None:
        return self._s().path

    @path.setter
    def path(self, value: str | None) -> None:
        self._s().path = value

    @property
    def level(self) -> int:
        return self._s().level

    @level.setter
    def level(self, value: int) -> None:
        self._s().level = value

    @property
    def to_stderr(self) -> bool:
        return self._s().to_stderr

    @to_stderr.setter
    def to_stderr(self, value: bool) -> None:
        self._s().to_stderr = value

    @property
    def options(self) -> Options:
        return self._s().options

    @options.setter
    def options(self, value: Options) -> None:
        self._s().options = value

    def configure(
        self,
        *,
        path: str | None = None,
        level: str | None = None,
        to_stderr: bool | None = None,
        options: Options | None = None,
    ) -> None:
        s = self._s()
        if _SCOPED.get() and self._local.get() is None:
            s = self._base.copy()
            self._local.set(s)
        if path is not None:
            s.path = path or None
        if level is not None:
            s.level = LEVELS.get(level.lower(), s.level)
        if to_stderr is not None:
            s.to_stderr = to_stderr
        if options is not None:
            s.options = options

    def enabled(self, level: str) -> bool:
        s = self._s()
        return LEVELS[level] <= s.level and (s.path is not None or s.to_stderr)

    def _emit(self, level: str, msg: str) -> None:
        if not self.enabled(level):
            return
        s = self._s()
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} [{level}] {self.prefix}{redact(msg)}\n"
        if s.to_stderr:
            try:
                self.stderr.write(line)
                self.stderr.flush()
            except (OSError, ValueError):
                pass
        if s.path:
            try:
                _append(s.path, line.encode(), s.options)
            except OSError as exc:
                # Logging must never fail a CNI operation; say so once on stderr.
                try:
                    self.stderr.write(f"multinic: cannot write log file {s.path}: {exc}\n")
                except (OSError, ValueError):
                    pass

    def error(self, msg: str) -> None:
        self._emit("error", msg)

    def warning(self, msg: str) -> None:
        self._emit("error", "warning: " + msg)

    def verbose(self, msg: str) -> None:
        self._emit("verbose", msg)

    def debug(self, msg: str) -> None:
        self._emit("debug", msg)

    def panic(self, msg: str) -> None:
        self._emit("panic", msg)


def _mask_value(m: re.Match[str]) -> str:
    """Keep the key and the value's quoting (a JSON line stays JSON); drop the value."""
    value = m.group(0)[len(m.group(1)):]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{m.group(1)}{quote}<redacted>{quote}"


_SECRET_PATTERNS: list[tuple[re.Pattern[str], Any]] | None = None


def redact(text: str) -> str:
    """Mask bearer tokens, JWTs, PEM keys and secret-looking JSON/YAML values."""
    global _SECRET_PATTERNS
    low = text.lower()
    if not any(w in low for w in ("bearer", "token", "passw", "secret", "key", "eyj", "-----begin", "credential", "auth")):
        return text
    import re

    if _SECRET_PATTERNS is None:
        _SECRET_PATTERNS = [
            (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1<redacted>"),
            (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<redacted-jwt>"),
            (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), "<redacted-key>"),
            # A secret-named key's whole value: a double- or single-quoted string (escapes
            # included, so "a \"b\", c" is masked entirely), else everything up to a delimiter.
            (
                re.compile(
                    r"""(?i)(["']?[\w.-]*(?:token|password|passwd|secret|credential|auth|client-key-data|"""
                    r"""client[-_]key|private[-_]?key|apikey|api[-_]key)[\w.-]*["']?\s*[:=]\s*)"""
                    r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^"',;\s}]+)"""
                ),
                _mask_value,
            ),
        ]
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text


def _append(path: str, data: bytes, opts: Options) -> None:
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        size = st.st_size
        if opts.max_size_mb > 0 and size + len(data) > opts.max_size_mb * 1024 * 1024 and size > 0:
            os.close(fd)
            fd = -1
            rotate(path, opts, expect_ino=st.st_ino)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.write(fd, data)
    finally:
        if fd >= 0:
            os.close(fd)


def rotate(path: str, opts: Options, *, expect_ino: int | None = None) -> None:
    """Move ``path`` aside as a timestamped backup (gzip when asked) and prune old backups.

    ``expect_ino`` is the inode the caller found too big: when the file at ``path`` is no
    longer that one, another process rotated it while we waited for the lock.
    """
    import fcntl

    lock_fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        if expect_ino is not None and st.st_ino != expect_ino:
            return  # another process rotated it while we waited for the lock
        base, ext = os.path.splitext(path)
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
        backup = f"{base}-{stamp}{ext}"
        n = 0
        # Two rotations within one millisecond must not overwrite the first backup.
        while os.path.exists(backup) or os.path.exists(backup + ".gz"):
            n += 1
            backup = f"{base}-{stamp}{n:03d}{ext}"
        os.rename(path, backup)
        if opts.compress:
            import gzip
            import shutil

            with open(backup, "rb") as src, gzip.open(backup + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(backup + ".gz", 0o600)
            os.unlink(backup)
        _prune(base, ext, opts)
    finally:
        os.close(lock_fd)


def backups(path: str) -> list[str]:
    """Existing rotated backups of ``path``, oldest first."""
    base, ext = os.path.splitext(path)
    d = os.path.dirname(path) or "."
    stem = os.path.basename(base) + "-"
    out = [
        os.path.join(d, f)
        for f in os.listdir(d)
        if f.startswith(stem) and (f.endswith(ext) or f.endswith(ext + ".gz")) and f != os.path.basename(path)
    ]
    return sorted(out)


def _prune(base: str, ext: str, opts: Options) -> None:
    found = backups(base + ext)
    now = time.time()
    keep = found
    if opts.max_age_days > 0:
        for f in found:
            try:
                if now - os.stat(f).st_mtime > opts.max_age_days * 86400:
                    os.unlink(f)
            except OSError:
                pass
        keep = [f for f in found if os.path.exists(f)]
    if opts.max_backups > 0 and len(keep) > opts.max_backups:
        for f in keep[: len(keep) - opts.max_backups]:
            try:
                os.unlink(f)
            except OSError:
                pass


default = Logger()
error = default.error
warning = default.warning
verbose = default.verbose
debug = default.debug
configure = default.configure
enabled = default.enabled
