"""Run a command inside User-Mode Linux (UML) with the host's root file system.

Why this exists: the development/CI kernel has no ipvlan, 802.1q VLAN or dummy
support and no loadable modules.  Debian's ``user-mode-linux`` package ships a
6.1 kernel that runs as an ordinary process and carries those drivers as
modules.  Booting it with the host root mounted through hostfs gives a real,
private network stack in which the *same* Python, venv and checkout are
visible, so a test can run ``python -m pytest ...`` there unchanged.

Rules this module follows (and that callers can rely on):

* The hostfs root is the host's file system, mounted **read-write**.  The runner
  writes only into one scratch directory it creates (under ``scratch_parent``
  or the system temp dir) and removes it afterwards, also on timeout/error.
  The guest's ``/run`` (so ``/var/run`` and ``/run/netns``), ``/tmp``,
  ``/var/tmp`` and ``/dev/shm`` are guest-private tmpfs mounts, ``HOME`` is
  ``/tmp/home`` and ``PYTHONDONTWRITEBYTECODE=1`` is set, so ordinary programs do not
  write into the host.  Anything a guest command writes elsewhere *does* land
  on the host: write results into ``UMLRun.scratch`` (env ``MULTINIC_UML_SCRATCH``).
* The host's ``/lib/modules`` is never touched: modules are loaded with
  ``modprobe -d <scratch>/modroot`` where ``modroot/lib/modules/<version>`` is a
  symlink to ``/usr/lib/uml/modules/<version>``.
* UML state files (pid/mconsole socket) go to the scratch dir (``uml_dir=``),
  not ``~/.uml``.
* A guest-side watchdog powers the guest off ``timeout + 30`` s after boot
  even if the host process died without cleaning up.
* A UML process is never left behind: the kernel runs in its own session /
  process group, which is SIGKILLed at the end (before the leader is reaped, so
  the group id cannot have been reused).
* The guest's exit status is not the UML process's exit status; the init
  script writes exit code, stdout and stderr to files the host reads back.

Works as root and as an unprivileged user (UML is a user process; inside the
guest you are root of the guest kernel, with the host user's file access).

CLI (for debugging and make targets)::

    python -m conformance.uml [--module M ...] [--timeout S] [--mem 512M] -- CMD ARGS...
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_MODULES",
    "GuestCase",
    "GuestPytestResult",
    "UMLError",
    "UMLResult",
    "UMLRunner",
    "UMLSetupError",
    "UMLTimeoutError",
    "kernel_version",
    "main",
    "parse_junit",
    "run_in_uml",
    "run_pytest_in_uml",
    "uml_available",
]

#: Kernel binary; overridable for odd installs.
KERNEL_ENV: Final = "MULTINIC_UML_KERNEL"
#: Where Debian puts the UML modules; overridable likewise.
MODULES_DIR_ENV: Final = "MULTINIC_UML_MODULES_DIR"
#: Name of the env var that tells the guest command where it may write.
SCRATCH_ENV: Final = "MULTINIC_UML_SCRATCH"
#: Set to "1" in the guest so code can tell it runs under this runner.
IN_GUEST_ENV: Final = "MULTINIC_IN_UML"

#: Everything multinic's kernel tests need that the host kernel lacks, plus the
#: drivers that are *modules* in the UML kernel (veth, macvlan, bridge) so the
#: guest is a superset of the host.  ipvlan pulls in ipv6 by itself.
DEFAULT_MODULES: Final[tuple[str, ...]] = ("dummy", "veth", "macvlan", "bridge", "ipvlan", "8021q")

_DEFAULT_KERNEL: Final = "linux.uml"
_DEFAULT_MODULES_DIR: Final = "/usr/lib/uml/modules"
_INSTALL_HINT: Final = "apt-get install user-mode-linux kmod"
# Guest-private tmpfs mounts: the guest must not write the host's /run, /tmp...
_GUEST_TMPFS: Final[tuple[str, ...]] = ("/run", "/tmp", "/var/tmp", "/dev/shm")
# Holding place for the scratch dir while tmpfs mounts may cover its host path;
# /dev is the guest's own devtmpfs, so creating it writes nothing on the host.
_GUEST_HOLD: Final = "/dev/.multinic-uml-scratch"
# HOME for the guest command: inside the guest's /tmp tmpfs.
_GUEST_HOME: Final = "/tmp/home"
# Exit code the init script reports when guest setup (mounts, modprobe) failed.
_SETUP_FAILED: Final = "setup-failed"
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")


class UMLError(RuntimeError):
    """The guest could not be run or did not report a result."""

    def __init__(self, message: str, result: UMLResult | None = None) -> None:
        super().__init__(message)
        #: Whatever was collected (console log at least), for diagnosis.
        self.result = result


class UMLSetupError(UMLError):
    """Guest setup (mounts, module loading) failed before the command ran."""


class UMLTimeoutError(UMLError):
    """The guest did not power off within the timeout and was killed."""


@dataclasses.dataclass(frozen=True)
class UMLResult:
    """Outcome of one guest run (mirrors :class:`subprocess.CompletedProcess`)."""

    exit_code: int
    stdout: str
    stderr: str
    #: Kernel console output plus guest setup log: read this when things break.
    console_log: str = dataclasses.field(repr=False)
    #: Wall-clock seconds from starting the kernel to its exit (boot included).
    duration: float
    #: Files the guest left in its scratch dir (name -> bytes), e.g. junit.xml;
    #: only those named in ``collect=`` are kept, since the dir is deleted.
    files: Mapping[str, bytes] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> UMLResult:
        """Raise :class:`UMLError` unless the command exited 0; return self."""
        if self.exit_code != 0:
            raise UMLError(
                f"guest command exited {self.exit_code}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}",
                self,
            )
        return self


def _kernel_path() -> str | None:
    return shutil.which(os.environ.get(KERNEL_ENV, _DEFAULT_KERNEL))


def _modules_root() -> Path:
    return Path(os.environ.get(MODULES_DIR_ENV, _DEFAULT_MODULES_DIR))


def kernel_version(kernel: str | None = None) -> str:
    """Return the UML kernel's release (the modules directory name).

    Asks the binary (``linux.uml --version`` prints the release without
    booting); falls back to the only directory under the modules root.
    """
    kernel = kernel or _kernel_path()
    if kernel is not None:
        try:
            out = subprocess.run(
                [kernel, "--version"], capture_output=True, text=True, timeout=15, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out and (_modules_root() / out).is_dir():
            return out
    candidates = sorted(p.name for p in _modules_root().iterdir() if p.is_dir()) if _modules_root().is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise UMLError(f"cannot determine the UML kernel version (modules dirs: {candidates})")


def uml_available() -> str | None:
    """Return ``None`` if UML runs can work here, else a human-readable reason.

    Cheap (no boot): meant for ``pytest.skip(reason)`` and ``--kernel uml``.
    """
    if sys.platform != "linux":
        return f"User-Mode Linux needs a Linux host (this is {sys.platform})"
    kernel = _kernel_path()
    if kernel is None:
        return f"linux.uml not installed ({_INSTALL_HINT})"
    if shutil.which("modprobe") is None and not Path("/usr/sbin/modprobe").exists():
        return f"modprobe not installed ({_INSTALL_HINT})"
    if not _modules_root().is_dir():
        return f"UML modules missing: {_modules_root()} ({_INSTALL_HINT})"
    try:
        kernel_version(kernel)
    except UMLError as exc:
        return str(exc)
    return None


def _guest_env(env: Mapping[str, str] | None, scratch: Path) -> dict[str, str]:
    """Build the guest command's environment.

    The guest's init starts with an almost empty environment, so give it a
    sane PATH with the *running* interpreter's directory first (so ``python``
    and console scripts resolve to the same venv), and keep bytecode out of
    the host checkout.  ``env`` overrides these.
    """
    exe_dir = str(Path(sys.executable).parent)
    base: dict[str, str] = {
        "PATH": f"{exe_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        # Guest-private (tmpfs), so ~/.cache and friends never land on the host.
        "HOME": _GUEST_HOME,
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        SCRATCH_ENV: str(scratch),
        IN_GUEST_ENV: "1",
    }
    if sys.prefix != sys.base_prefix:  # running from a venv: say so in the guest too
        base["VIRTUAL_ENV"] = sys.prefix
    base.update(env or {})
    for key in base:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"invalid environment variable name: {key!r}")
    return base


def _init_script(
    *,
    scratch: Path,
    version: str,
    modules: Sequence[str],
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    watchdog: float,
    keep: Sequence[str] = (),
) -> str:
    """Generate the guest's PID-1 shell script.

    It never exits on its own (PID 1 exiting panics the kernel); every path
    ends in a synced power-off.  Setup failures are reported through the
    ``exit_code`` file as ``setup-failed`` with details in ``setup.log``.
    """
    q = shlex.quote
    s = str(scratch)
    lines = [
        "#!/bin/sh",
        "# Generated by conformance/uml.py: PID 1 of a User-Mode Linux guest.",
        f"S={q(s)}",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
        "poweroff() { sync; echo o > /proc/sysrq-trigger; sleep 10; halt -f; }",
        # R is where results go: the host path first, then the held bind mount
        # while tmpfs mounts may cover the host path (until it is re-bound).
        'R="$S"',
        'fail() { echo "setup: $*" >> "$R/setup.log"; echo ' + _SETUP_FAILED + ' > "$R/exit_code"; poweroff; }',
        'exec 2>>"$S/setup.log"',
        "mount -t proc proc /proc || fail 'mount /proc'",
        "mount -t sysfs sysfs /sys || fail 'mount /sys'",
        # Guest-side watchdog: if the host side dies without killing us
        # (SIGKILL, os._exit), the guest still powers itself off.
        f"( sleep {int(watchdog)}; echo 'watchdog: powering off' >> \"$R/setup.log\"; poweroff ) &",
        # /dev should already be the guest's devtmpfs (CONFIG_DEVTMPFS_MOUNT);
        # if not, mount it so /dev is guest-private before we create anything.
        "grep -q ' /dev devtmpfs ' /proc/mounts || mount -t devtmpfs devtmpfs /dev || fail 'mount /dev'",
        # Keep a handle on the scratch dir before tmpfs mounts can cover it
        # (the default scratch parent is /tmp).
        f"mkdir -p {_GUEST_HOLD} && mount --bind \"$S\" {_GUEST_HOLD} || fail 'bind scratch'",
        f"R={_GUEST_HOLD}",
    ]
    # Host directories the command needs (the checkout, the venv) that a guest-private tmpfs
    # would cover (a CI clone under /tmp): hold them now, bind them back after the tmpfs mounts.
    for i, path in enumerate(keep):
        lines.append(f"mkdir -p {_GUEST_HOLD}-keep{i} && mount --bind {q(path)} {_GUEST_HOLD}-keep{i} "
                     f"|| fail {q('bind ' + path)}")
    lines += [
        # /dev is guest-private, so /dev/shm may be created (Python's
        # multiprocessing needs it); other mount points must already exist.
        "mkdir -p /dev/shm",
    ]
    for mnt in _GUEST_TMPFS:
        lines.append(f"if [ -d {mnt} ]; then mount -t tmpfs -o mode=1777 tmpfs {mnt} || fail 'tmpfs {mnt}'; fi")
    lines += [
        f"mkdir -p /run/netns /run/lock {_GUEST_HOME}",
        # If a tmpfs covered the scratch path, recreate it and bind it back.
        f'if [ ! -e "$S/init.sh" ]; then mkdir -p "$S" && mount --bind {_GUEST_HOLD} "$S" || fail rebind; fi',
    ]
    for i, path in enumerate(keep):
        lines.append(f"if [ ! -e {q(path)}/. ] || [ -z \"$(ls -A {q(path)} 2>/dev/null)\" ]; then "
                     f"mkdir -p {q(path)} && mount --bind {_GUEST_HOLD}-keep{i} {q(path)} || fail {q('rebind ' + path)}; fi")
    lines += [
        "echo multinic-uml > /proc/sys/kernel/hostname",
        "ip link set lo up || fail 'lo up'",
    ]
    for mod in modules:
        lines.append(f'modprobe -d "$S/modroot" {q(mod)} || fail {q("modprobe " + mod + " (kernel " + version + ")")}')
    exports = " ".join(f"{k}={q(v)}" for k, v in env.items())
    cmd = " ".join(q(a) for a in argv)
    lines += [
        f"cd {q(cwd)} || fail {q('cd ' + cwd)}",
        # A child process (env), so `exec`/`exit` in the command cannot end
        # PID 1; the environment is replaced (env -i), not merged with init's.
        f'env -i {exports} {cmd} </dev/null >"$S/stdout" 2>"$S/stderr"',
        'echo $? > "$S/exit_code.tmp" && mv "$S/exit_code.tmp" "$S/exit_code"',
        "poweroff",
        "",
    ]
    return "\n".join(lines)


_PROJECT_ROOT: Final = str(Path(__file__).resolve().parent.parent)


def _covered_dirs(*paths: str) -> list[str]:
    """Those of ``paths`` (existing directories) that a guest-private tmpfs mount would cover.

    Outermost first and without duplicates: re-binding a parent also brings its children back.
    """
    out: list[str] = []
    for p in sorted({str(Path(p).resolve()) for p in paths if p and os.path.isdir(p)}, key=len):
        if any(p == m or p.startswith(m + "/") for m in _GUEST_TMPFS) and not any(
                p == o or p.startswith(o + "/") for o in out):
            out.append(p)
    return out


def visible_in_guest(path: str) -> bool:
    """True if ``path`` is visible in a guest started by ``run_in_uml`` (hostfs, or a kept directory)."""
    p = os.path.abspath(path)
    kept = _covered_dirs(os.getcwd(), _PROJECT_ROOT, sys.prefix)
    if any(p == k or p.startswith(k + "/") for k in kept):
        return True
    return not any(p == m or p.startswith(m + "/") for m in (*_GUEST_TMPFS, "/dev", "/proc", "/sys"))


def _hidden_in_guest(path: Path) -> bool:
    """True if the guest cannot see ``path`` through hostfs at all.

    /dev is the guest's devtmpfs before init even runs, and /proc, /sys are
    its own; /tmp, /run, ... are fine because init re-binds the scratch dir.
    """
    return any(path == Path(p) or Path(p) in path.parents for p in ("/dev", "/proc", "/sys"))


def _usable_memdir(path: str) -> bool:
    """True if UML can put its memory file in ``path`` (writable, not noexec)."""
    try:
        noexec = bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:
        return False
    return not noexec and os.access(path, os.W_OK | os.X_OK)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _kill_group_and_reap(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the kernel's whole process group, then reap the leader.

    UML forks helper/userspace processes into the same group.  The leader is
    only reaped *after* the group kill, so its pid (= the pgid) cannot have
    been reused by an unrelated process.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # Helpers orphaned by the leader get reparented; wait until the group is gone.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _group_alive(proc.pid):
            return
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """True if any live (non-zombie) process is still in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Fields after the parenthesised comm: state ppid pgrp ...
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_no_reap(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def run_in_uml(
    argv: Sequence[str],
    *,
    modules: Sequence[str] = DEFAULT_MODULES,
    mem: str = "512M",
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    collect: Sequence[str] = (),
    scratch_parent: str | os.PathLike[str] | None = None,
    keep_scratch: bool = False,
) -> UMLResult:
    """Boot UML, run ``argv`` as guest root, power off, return the result.

    ``argv[0]`` is looked up on the guest PATH (``sys.executable``'s dir
    first).  ``env`` is added to a minimal guest environment (see
    :func:`_guest_env`); ``cwd`` defaults to the host's current directory,
    which the guest sees at the same path.  ``collect`` names files the
    command writes into ``$MULTINIC_UML_SCRATCH`` to return in
    ``UMLResult.files``.  ``timeout`` covers boot + command + power-off.

    Raises :class:`UMLTimeoutError` (guest killed), :class:`UMLSetupError`
    (mount/modprobe failed), :class:`UMLError` (UML unavailable, or the guest
    died without reporting); each carries ``.result`` with the console log.
    A non-zero exit of the command itself is *not* an error: check
    ``exit_code`` or call :meth:`UMLResult.check`.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    reason = uml_available()
    if reason is not None:
        raise UMLError(reason)
    kernel = _kernel_path()
    assert kernel is not None  # uml_available() checked it
    version = kernel_version(kernel)
    workdir = str(Path(cwd) if cwd is not None else Path.cwd())

    parent = Path(scratch_parent if scratch_parent is not None else tempfile.gettempdir()).resolve()
    if _hidden_in_guest(parent):
        if scratch_parent is not None:
            raise UMLError(f"scratch_parent {parent} is not visible in the guest (guest-private /dev, /proc, /sys)")
        parent = Path("/tmp")  # e.g. TMPDIR=/dev/shm: the guest's /dev is its own devtmpfs
    scratch = Path(tempfile.mkdtemp(prefix="multinic-uml-", dir=parent)).resolve()
    try:
        # The path goes on the kernel command line (init=) and into sh: keep it boring.
        if not _SAFE_PATH.fullmatch(str(scratch)):
            raise UMLError(f"scratch dir path unsuitable for the kernel command line: {scratch}")
        modroot = scratch / "modroot" / "lib" / "modules"
        modroot.mkdir(parents=True)
        (modroot / version).symlink_to(_modules_root() / version)
        (scratch / "uml").mkdir()
        init = scratch / "init.sh"
        init.write_text(
            _init_script(
                scratch=scratch,
                version=version,
                modules=modules,
                argv=[os.fspath(a) for a in argv],
                env=_guest_env(env, scratch),
                cwd=workdir,
                watchdog=timeout + 30,
                keep=_covered_dirs(workdir, _PROJECT_ROOT, sys.prefix),
            )
        )
        init.chmod(0o755)
        return _boot(kernel, scratch, mem=mem, timeout=timeout, collect=collect)
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _boot(kernel: str, scratch: Path, *, mem: str, timeout: float, collect: Sequence[str]) -> UMLResult:
    cmdline = [
        kernel,
        f"mem={mem}",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={scratch / 'init.sh'}",
        # Unique id + state dir in scratch: parallel runs never collide and
        # nothing is written to ~/.uml.
        f"umid=multinic-{scratch.name.removeprefix('multinic-uml-')}",
        f"uml_dir={scratch / 'uml'}",
        "con=null",
        "con0=fd:0,fd:1",
    ]
    # UML backs guest RAM with an unlinked file in $TMPDIR, which must allow
    # exec; prefer /dev/shm (RAM, usually not noexec on Debian), else scratch.
    uml_env = dict(os.environ)
    uml_env["TMPDIR"] = "/dev/shm" if _usable_memdir("/dev/shm") else str(scratch)
    console = scratch / "console.log"
    start = time.monotonic()
    with open(console, "wb") as out:
        proc = subprocess.Popen(
            cmdline,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=uml_env,
            cwd=str(scratch),
            start_new_session=True,  # own process group: kill it all at the end
        )
        try:
            finished = _wait_no_reap(proc.pid, timeout)
        finally:
            # Also on KeyboardInterrupt: never leave a UML process behind.
            _kill_group_and_reap(proc)
    duration = time.monotonic() - start

    setup_log = _read_text(scratch / "setup.log")
    console_log = _read_text(console) + (f"\n--- guest setup log ---\n{setup_log}" if setup_log else "")
    files: dict[str, bytes] = {}
    for name in collect:
        path = scratch / name
        if path.is_file():
            files[name] = path.read_bytes()
    code_text = _read_text(scratch / "exit_code").strip()
    partial = UMLResult(
        exit_code=-1,
        stdout=_read_text(scratch / "stdout"),
        stderr=_read_text(scratch / "stderr"),
        console_log=console_log,
        duration=duration,
        files=files,
    )
    if not finished and not code_text:
        raise UMLTimeoutError(f"UML guest did not finish within {timeout} s; killed", partial)
    if code_text == _SETUP_FAILED:
        raise UMLSetupError(f"UML guest setup failed: {setup_log.strip()}", partial)
    if not code_text.lstrip("-").isdigit():
        raise UMLError(
            f"UML guest exited (status {proc.returncode}) without reporting an exit code; "
            f"console tail:\n{console_log[-2000:]}",
            partial,
        )
    return dataclasses.replace(partial, exit_code=int(code_text))


@dataclasses.dataclass(frozen=True)
class GuestCase:
    """One test case from a guest pytest run's JUnit XML."""

    nodeid: str
    outcome: str  # "passed" | "failed" | "error" | "skipped"
    message: str = ""
    details: str = ""


@dataclasses.dataclass(frozen=True)
class GuestPytestResult:
    """A pytest run inside UML: the raw :class:`UMLResult` plus parsed cases."""

    uml: UMLResult
    cases: tuple[GuestCase, ...]

    @property
    def exit_code(self) -> int:
        return self.uml.exit_code

    def with_outcome(self, *outcomes: str) -> list[GuestCase]:
        return [c for c in self.cases if c.outcome in outcomes]

    def summary(self) -> str:
        """Readable report: failed/errored cases, else the run's output tail."""
        bad = self.with_outcome("failed", "error")
        if not bad:
            return (
                f"guest pytest exit {self.exit_code}, {len(self.cases)} case(s)\n"
                f"--- stdout ---\n{self.uml.stdout[-4000:]}\n--- stderr ---\n{self.uml.stderr[-2000:]}"
            )
        parts = [f"{len(bad)} guest test(s) failed in UML:"]
        for case in bad:
            parts.append(f"{case.outcome.upper()} {case.nodeid}: {case.message}\n{case.details}".rstrip())
        return "\n\n".join(parts)


def parse_junit(data: bytes) -> tuple[GuestCase, ...]:
    """Parse pytest's JUnit XML into :class:`GuestCase` records."""
    cases: list[GuestCase] = []
    for tc in ET.fromstring(data).iter("testcase"):
        # pytest's classname is the dotted module path (+ class); rebuild a
        # readable node id from it.
        nodeid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        outcome, message, details = "passed", "", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            child = tc.find(tag)
            if child is not None:
                outcome, message, details = name, child.get("message", ""), (child.text or "").strip()
                break
        cases.append(GuestCase(nodeid, outcome, message, details))
    return tuple(cases)


_JUNIT: Final = "junit.xml"


def run_pytest_in_uml(
    args: Sequence[str],
    *,
    modules: Sequence[str] = DEFAULT_MODULES,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> GuestPytestResult:
    """Run ``python -m pytest ARGS`` (this interpreter) in a guest, parse JUnit.

    The JUnit file goes to the guest's scratch dir (the only place it may
    write on the host) and is collected before the dir is removed; the cache
    provider is disabled so no ``.pytest_cache`` lands in the checkout.
    """
    # sh expands $MULTINIC_UML_SCRATCH in the guest; the host does not know the path yet.
    script = f'exec "$0" -m pytest -p no:cacheprovider --junitxml="${SCRATCH_ENV}/{_JUNIT}" "$@"'
    result = run_in_uml(
        ["sh", "-c", script, sys.executable, *args],
        modules=modules,
        timeout=timeout,
        env=env,
        cwd=cwd,
        collect=[_JUNIT],
    )
    junit = result.files.get(_JUNIT)
    return GuestPytestResult(result, parse_junit(junit) if junit else ())


class UMLRunner:
    """A configured runner (default cwd/modules/timeouts) for repeated use.

    This is what the ``uml`` pytest fixture returns; the conformance harness
    can use it the same way.
    """

    def __init__(
        self,
        *,
        cwd: str | os.PathLike[str] | None = None,
        modules: Sequence[str] = DEFAULT_MODULES,
        timeout: float = 120,
        pytest_timeout: float = 600,
    ) -> None:
        self.cwd = cwd
        self.modules = tuple(modules)
        self.timeout = timeout
        self.pytest_timeout = pytest_timeout

    def run(
        self,
        argv: Sequence[str],
        *,
        modules: Sequence[str] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        collect: Sequence[str] = (),
        scratch_parent: str | os.PathLike[str] | None = None,
    ) -> UMLResult:
        """:func:`run_in_uml` with this runner's defaults."""
        return run_in_uml(
            argv,
            modules=self.modules if modules is None else modules,
            timeout=self.timeout if timeout is None else timeout,
            env=env,
            cwd=self.cwd if cwd is None else cwd,
            collect=collect,
            scratch_parent=scratch_parent,
        )

    def python(
        self,
        code: str,
        *,
        modules: Sequence[str] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> UMLResult:
        """Run a Python snippet with this interpreter (same venv) in the guest."""
        return self.run([sys.executable, "-c", code], modules=modules, timeout=timeout, env=env)

    def pytest(
        self,
        *args: str,
        modules: Sequence[str] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> GuestPytestResult:
        """``python -m pytest ARGS`` in the guest (see :func:`run_pytest_in_uml`)."""
        return run_pytest_in_uml(
            args,
            modules=self.modules if modules is None else modules,
            timeout=self.pytest_timeout if timeout is None else timeout,
            env=env,
            cwd=self.cwd,
        )


def main(args: Sequence[str] | None = None) -> int:
    """``python -m conformance.uml [opts] -- CMD ARGS...``: exit with CMD's code."""
    parser = argparse.ArgumentParser(
        prog="python -m conformance.uml",
        description="Run a command as root inside User-Mode Linux (host root via hostfs).",
    )
    parser.add_argument(
        "--module",
        "-m",
        action="append",
        dest="modules",
        metavar="MOD",
        help=f"kernel module to load (repeatable; default: {' '.join(DEFAULT_MODULES)})",
    )
    parser.add_argument("--no-modules", action="store_true", help="load no modules")
    parser.add_argument("--mem", default="512M", help="guest memory (default 512M)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds (default 120)")
    parser.add_argument("--cwd", default=None, help="guest working directory (default: current)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra guest env")
    parser.add_argument("--console", action="store_true", help="print the kernel console log to stderr")
    parser.add_argument("--check", action="store_true", help="only report whether UML is usable")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ns = parser.parse_args(args)

    if ns.check:
        reason = uml_available()
        print(reason or f"UML usable (kernel {kernel_version()})")
        return 0 if reason is None else 1
    command = list(ns.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("no command given (use: -- CMD ARGS...)")
    env = dict(item.split("=", 1) for item in ns.env)
    modules = () if ns.no_modules else (ns.modules or DEFAULT_MODULES)
    try:
        result = run_in_uml(command, modules=modules, mem=ns.mem, timeout=ns.timeout, env=env, cwd=ns.cwd)
    except UMLError as exc:
        if exc.result is not None:
            sys.stdout.write(exc.result.stdout)
            sys.stderr.write(exc.result.stderr)
            if ns.console:
                sys.stderr.write(exc.result.console_log)
        print(f"conformance.uml: {exc}", file=sys.stderr)
        return 125  # like `env`/`timeout`: the runner itself failed
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if ns.console:
        sys.stderr.write(result.console_log)
    print(f"conformance.uml: exit {result.exit_code} in {result.duration:.1f} s", file=sys.stderr)
    return result.exit_code if 0 <= result.exit_code < 256 else 1


if __name__ == "__main__":
    sys.exit(main())
