"""The thick-mode CNI binary's body: forward one CNI call to the node daemon over a unix socket.

Exec'd through ``shim.py`` (``python -I -S cni/daemon/shim.py``, which loads this module from its
cached bytecode) or frozen as ``multinic-shim`` (packaging/multinic.spec builds it from this file).

Start-up is the whole cost of this program (cni/ARCHITECTURE.md, "Start-up costs": a Python shim run with
``-I -S`` that imports only ``_socket``/``posix``/``sys`` starts in ≈ 18–25 ms), so:
- it imports nothing but ``_socket``, ``posix`` and ``sys`` — no site, no json, no multinic, not even ``os``
  (≈ 1.3 ms: ``os`` imports ``_collections_abc``, ``posixpath`` and ``stat``; ``posix`` is built in);
- it leaves by ``posix._exit`` once stdout is flushed: the interpreter's teardown is ≈ 1–4 ms of
  clean-up nobody needs;
- it is runnable as a plain file (``python -I -S shim.py``) as well as ``multinic shim``;
- it is imported, not run as a script: a script is compiled at every exec (≈ 1.7 ms for this
  module beyond the ≈ 1 ms any script pays), a module comes from its ``__pycache__``.

Protocol: one HTTP/1.1 ``POST /cni`` on the daemon's socket with a JSON body
``{"env": {CNI_* and K8S-relevant vars}, "stdin": "<config text>"}``; the reply body is
the CNI stdout verbatim and the ``X-CNI-Exit`` header the exit status.

When the daemon cannot be reached: ADD/CHECK/STATUS/GC fail with CNI error 11 (try again
later); DEL must not leak, so the shim runs the DEL itself in thin mode by exec'ing the
full ``multinic`` (which reads the attachment cache) with the same env and stdin.
"""

import _socket
import posix
import sys

# Kept equal to cni.__version__ (a unit test checks): the shim imports nothing of multinic, and
# `multinic doctor` compares it with the daemon's multinic_build_info.
VERSION = "0.1.0"
_FS = sys.getfilesystemencoding()


def _environ() -> dict[str, str]:
    """The environment as ``os.environ`` has it: ``os``'s own when something imported it already (``multinic shim``
    in the full program, where a caller may have changed it), else decoded from ``posix.environ`` the same way."""
    os_mod = sys.modules.get("os")
    if os_mod is not None:
        return dict(os_mod.environ)
    return {k.decode(_FS, "surrogateescape"): v.decode(_FS, "surrogateescape") for k, v in posix.environ.items()}


_ENV = _environ()
SOCKET = _ENV.get("MULTINIC_SOCKET", "/run/multinic/multinic.sock")
TIMEOUT = float(_ENV.get("MULTINIC_SHIM_TIMEOUT", "240"))  # kubelet's sandbox timeout is 4 min
THIN = _ENV.get("MULTINIC_THIN", "")


def _esc(s: str) -> str:
    """``s`` as a JSON string literal (``json.loads`` reads ``s`` back); no json module: start-up."""
    # Config text, paths and CNI_ARGS are printable, maybe with newlines and tabs: replaces then do all
    # the escaping (≈ 5 µs for the bench pod's 0.9 KB config; the per-character loop takes ≈ 50 µs).
    # Non-ASCII stays as it is: the body is UTF-8, which JSON allows.
    t = s.replace("\\", "\\\\").replace('"', '\\"')
    if not t.isprintable():
        t = t.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
        if not t.isprintable():
            return _esc_slow(s)
    return '"' + t + '"'


def _esc_slow(s: str) -> str:
    """``_esc`` for text with other control characters (``\\u00XX``) or unprintable non-ASCII (as it is)."""
    out: list[str] = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _error(code: int, msg: str, version: str = "1.0.0") -> int:
    sys.stdout.write(f'{{"cniVersion":{_esc(version)},"code":{code:d},"msg":{_esc(msg)}}}\n')
    sys.stdout.flush()
    return 1


def _version_of(stdin: str) -> str:
    i = stdin.find('"cniVersion"')
    if i < 0:
        return "1.0.0"
    j = stdin.find('"', stdin.find(":", i) + 1)
    k = stdin.find('"', j + 1)
    v = stdin[j + 1:k]
    return v if 0 < len(v) < 12 else "1.0.0"


def _thin_fallback(stdin_bytes: bytes) -> int:
    """Run the command ourselves (DEL only): exec the full multinic so nothing is leaked."""
    exe = THIN or _sibling(sys.argv[0], "multinic")
    r, w = posix.pipe()
    pid = posix.fork()
    if pid == 0:
        posix.close(w)
        posix.dup2(r, 0)
        try:
            posix.execv(exe, [exe])
        finally:
            posix._exit(127)
    posix.close(r)
    posix.write(w, stdin_bytes)
    posix.close(w)
    _, status = posix.waitpid(pid, 0)
    return posix.waitstatus_to_exitcode(status)


def _sibling(argv0: str, name: str) -> str:
    """``os.path.join(os.path.dirname(os.path.abspath(argv0)), name)`` without ``os.path`` (the kernel resolves
    any ``..`` left in the directory the same way ``abspath`` would have folded it)."""
    path = argv0 if argv0.startswith("/") else posix.getcwd() + "/" + argv0
    return path.rsplit("/", 1)[0] + "/" + name


def _connect() -> _socket.socket:
    """Connect to the daemon; a full accept queue (EAGAIN) during a burst is retried briefly."""
    import time  # a built-in module: no start-up cost

    delay = 0.005
    for _ in range(60):  # ~3 s in all
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        try:
            s.connect(SOCKET)
            return s
        except BlockingIOError:
            s.close()
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except BaseException:
            s.close()
            raise
    raise BlockingIOError(11, f"the daemon's accept queue at {SOCKET} stayed full")


class DaemonVanished(OSError):
    """The daemon accepted the call and closed the connection without a reply (it died mid-call)."""


def forward(env: dict[str, str], stdin_bytes: bytes) -> tuple[int, bytes]:
    """Send the call; return (exit status, stdout bytes). Raises OSError when the daemon is unreachable."""
    stdin = stdin_bytes.decode("utf-8", "replace")
    fields = ",".join(f"{_esc(k)}:{_esc(v)}" for k, v in env.items())
    body = f'{{"env":{{{fields}}},"stdin":{_esc(stdin)}}}'.encode()
    s = _connect()
    try:
        s.sendall(b"POST /cni HTTP/1.1\r\nHost: multinic\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        chunks: list[bytes] = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    finally:
        s.close()
    raw = b"".join(chunks)
    if not raw:
        raise DaemonVanished(
            f"the multinic daemon at {SOCKET} closed the connection without answering: it exited or was restarted "
            "during the call (its output: kubectl -n kube-system logs ds/multinic -c daemon --previous, or the "
            "daemon's stderr; the call's own log is the logFile of the multinic config)"
        )
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1]) if lines and len(lines[0].split(b" ")) > 1 else 0
    code = None
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"x-cni-exit":
            code = int(v.strip())
    if status == 503:
        raise ConnectionRefusedError("daemon busy: " + payload.decode("utf-8", "replace"))
    if status != 200 or code is None:
        what = f"HTTP {status:d}" if status else f"{len(raw):d} bytes that are not an HTTP reply"
        raise OSError(f"bad reply from the multinic daemon at {SOCKET} ({what}): {payload[:200].decode('utf-8', 'replace')}")
    return code, payload


def _not_utf8(env: dict[str, str]) -> str:
    """The name of a variable that is not valid UTF-8 (surrogate-escaped bytes in ``os.environ``), else ""."""
    for k, v in env.items():
        if not (k.isascii() and v.isascii()):
            try:
                k.encode()
                v.encode()
            except UnicodeEncodeError:
                return k.encode("utf-8", "backslashreplace").decode()
    return ""


def main(argv: list[str] | None = None) -> int:
    # Runtimes pass no arguments; `multinic-shim --version` and `multinic shim --version` are people.
    if argv is not None and "--version" in argv[:2]:
        sys.stdout.write(f"multinic-shim {VERSION}\n")
        return 0
    env = {k: v for k, v in _environ().items() if k.startswith(("CNI_", "K8S_", "KUBERNETES_", "MULTINIC_", "NODE_NAME"))}
    stdin_bytes = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else b""
    cmd = env.get("CNI_COMMAND", "")
    if cmd == "VERSION":  # answered locally: runtimes ask before every ADD, the daemon need not be up
        sys.stdout.write('{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n')
        sys.stdout.flush()
        return 0
    bad = _not_utf8(env)
    if bad:
        # The request body is UTF-8 JSON: such a value cannot reach the daemon unchanged (CNI code 4:
        # invalid necessary environment variables). Nothing was done, so a DEL has nothing to fall back for.
        return _error(4, f"environment variable {bad} is not valid UTF-8; multinic cannot pass it to its daemon",
                      _version_of(stdin_bytes.decode("utf-8", "replace")))
    try:
        code, out = forward(env, stdin_bytes)
    except OSError as exc:
        if cmd == "DEL":
            return _thin_fallback(stdin_bytes)
        version = _version_of(stdin_bytes.decode("utf-8", "replace"))
        if isinstance(exc, DaemonVanished):
            # The call may have been half done: the runtime's retry (or its DEL) cleans up from the cache.
            return _error(11, f"{exc}; try again later", version)
        return _error(11, f"multinic daemon unavailable at {SOCKET} ({exc}); try again later", version)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return code


def run() -> None:
    """The program: ``main`` with the process's arguments, then exit without the interpreter's teardown."""
    code = main(sys.argv)
    # Skip the teardown (≈ 1–4 ms per call: module and object clean-up that nothing here needs). main()
    # has flushed stdout on every path; flush again so a path added later cannot lose the runtime's
    # answer. An exception from main() still takes the normal exit (traceback, status 1).
    sys.stdout.flush()
    posix._exit(code & 0xFF)


if __name__ == "__main__":
    run()
