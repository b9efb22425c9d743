"""The shim (``python -I -S cni/daemon/shim.py``) when the daemon goes away during a call.

The "daemon" here is a real process on a real unix socket that reads the shim's request and then
SIGKILLs itself, as a crashed daemon does (the real daemon killed at fault points is in
tests/reliability/test_rel_crash_faults.py). The shim must say what happened — the daemon closed
the connection without answering, and where its log is — as CNI error 11, not a bare "HTTP 0".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SHIM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    "cni", "daemon", "shim.py")

# Accepts one call, reads the request, and dies by SIGKILL before answering (no reply, no close handshake).
DYING_DAEMON = r"""
import os, signal, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
open(sys.argv[2], "w").close()  # ready
c, _ = s.accept()
c.recv(65536)
os.kill(os.getpid(), signal.SIGKILL)
"""

# Answers one call with bytes that are not HTTP.
GARBLED_DAEMON = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
open(sys.argv[2], "w").close()
c, _ = s.accept()
c.recv(65536)
c.sendall(b"nonsense")
c.close()
"""


@contextmanager
def _daemon(code: str, tmp_path: Path) -> Iterator[str]:
    """The test daemon ``code`` listening; its socket path. Killed and reaped on exit, whatever happened."""
    sock, ready = str(tmp_path / "d.sock"), tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", code, sock, str(ready)])
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the test daemon did not start")
            time.sleep(0.01)
        yield sock
    finally:
        proc.kill()
        proc.wait()


def _shim(sock: str, command: str) -> tuple[int, dict[str, object]]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MULTINIC_SOCKET": sock, "CNI_COMMAND": command,
           "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "MULTINIC_THIN": "/bin/false"}
    p = subprocess.run([sys.executable, "-I", "-S", SHIM], input=b'{"cniVersion":"0.4.0","name":"n","type":"multinic"}',
                       env=env, capture_output=True, timeout=60, check=False)
    return p.returncode, json.loads(p.stdout)


def test_daemon_killed_mid_call_is_error_11_saying_it_closed_the_connection(tmp_path: Path) -> None:
    with _daemon(DYING_DAEMON, tmp_path) as sock:
        rc, doc = _shim(sock, "ADD")
    assert rc == 1 and doc["code"] == 11 and doc["cniVersion"] == "0.4.0", doc
    msg = str(doc["msg"])
    assert "closed the connection without answering" in msg and sock in msg, msg
    assert "logs" in msg and "try again later" in msg, msg  # where to look, and that a retry is the remedy
    assert "HTTP 0" not in msg, msg


def test_daemon_answering_garbage_is_named_as_not_http(tmp_path: Path) -> None:
    with _daemon(GARBLED_DAEMON, tmp_path) as sock:
        rc, doc = _shim(sock, "CHECK")
    assert rc == 1 and doc["code"] == 11, doc
    assert "bytes that are not an HTTP reply" in str(doc["msg"]) and "HTTP 0" not in str(doc["msg"]), doc


# Answers one call with a large body and a non-zero CNI exit status, echoing the request body back in it
# (so the test sees what the shim sent), then closes.
ANSWERING_DAEMON = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
open(sys.argv[2], "w").close()
c, _ = s.accept()
buf = b""
while b"\r\n\r\n" not in buf:
    buf += c.recv(65536)
head, _, body = buf.partition(b"\r\n\r\n")
n = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")][0].split(b":")[1])
while len(body) < n:
    body += c.recv(65536)
reply = body + b" " * (300 * 1024)
c.sendall(b"HTTP/1.1 200 OK\r\nX-CNI-Exit: 7\r\nContent-Length: %d\r\n\r\n" % len(reply) + reply)
c.close()
"""


def test_shim_writes_the_whole_reply_and_exits_with_the_daemons_status(tmp_path: Path) -> None:
    # The shim leaves by posix._exit (no interpreter teardown): a reply bigger than a pipe buffer must still
    # reach the runtime entirely, and the exit status must be the X-CNI-Exit header's. The request body is
    # JSON (the shim escapes without the json module): control characters, quotes and non-ASCII round-trip.
    stdin = '{"cniVersion":"1.0.0","name":"n\\u00e9","type":"multinic","x":"tab\\there"}\n\t\x01"\\ é 日本 \u2028\x7f'
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "ADD",
           "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": 'K8S_POD_NAME=a"b\\c;IgnoreUnknown=1', "K8S_NOTHING": "\u00e9\t", "UNRELATED": "dropped"}
    with _daemon(ANSWERING_DAEMON, tmp_path) as sock:
        env["MULTINIC_SOCKET"] = sock
        p = subprocess.run([sys.executable, "-I", "-S", SHIM], input=stdin.encode(), env=env, capture_output=True,
                           timeout=60, check=False)
    assert p.returncode == 7, p.stderr
    assert len(p.stdout) > 300 * 1024 and p.stdout.endswith(b" " * 1024)
    sent = json.loads(p.stdout.rstrip(b" "))
    assert sent["stdin"] == stdin
    assert sent["env"] == {k: v for k, v in env.items() if k.startswith(("CNI_", "K8S_", "MULTINIC_"))}


@pytest.mark.parametrize("program", ["shim.py", "_shim.py"])
def test_shim_runs_as_a_plain_file_through_the_loader_or_alone(program: str, tmp_path: Path) -> None:
    # shim.py imports _shim from its own directory (bytecode cache: no per-exec compile of the program);
    # _shim.py alone is the whole program (what a copy into a bin dir or the frozen build runs).
    path = os.path.join(os.path.dirname(SHIM), program)
    p = subprocess.run([sys.executable, "-I", "-S", path, "--version"], capture_output=True, timeout=60, check=False,
                       cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.decode().startswith("multinic-shim "), p.stderr
    # Nothing of multinic but the shim, and not even os: the start-up budget of a per-call exec.
    probe = ("import sys, posix; sys.argv = [sys.argv[1], '--version']\n"
             "heavy = ('os', 'json', 'cni', 'socket', 'importlib', 'pyroute2')\n"
             "real = posix._exit\n"
             "posix._exit = lambda c: (print(sorted(m for m in sys.modules if m.split('.')[0] in heavy)), sys.stdout.flush(), real(c))\n"
             "with open(sys.argv[0]) as f: code = compile(f.read(), sys.argv[0], 'exec')\n"
             "exec(code, {'__name__': '__main__', '__file__': sys.argv[0]})\n")
    q = subprocess.run([sys.executable, "-I", "-S", "-c", probe, path], capture_output=True, timeout=60, check=False)
    assert q.returncode == 0 and "[]" in q.stdout.decode(), (q.stdout, q.stderr)


@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_env_that_is_not_utf8_is_error_4_naming_the_variable(command: str, tmp_path: Path) -> None:
    # os.environ holds such bytes as surrogates; the UTF-8 request body cannot carry them. The shim
    # answered with a traceback (UnicodeEncodeError) before; a runtime needs a CNI error.
    env: dict[bytes, bytes] = {b"PATH": os.environ.get("PATH", "/usr/bin:/bin").encode(),
                               b"MULTINIC_SOCKET": str(tmp_path / "none.sock").encode(),
                               b"CNI_COMMAND": command.encode(), b"CNI_CONTAINERID": b"abc",
                               b"CNI_NETNS": b"/var/run/netns/\xff\xfe", b"CNI_IFNAME": b"eth0"}
    p = subprocess.run([sys.executable, "-I", "-S", SHIM], input=b'{"cniVersion":"0.4.0","name":"n"}',
                       env=env, capture_output=True, timeout=30, check=False)
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["code"] == 4 and out["cniVersion"] == "0.4.0"
    assert "CNI_NETNS" in out["msg"] and "UTF-8" in out["msg"]
    assert b"Traceback" not in p.stderr
