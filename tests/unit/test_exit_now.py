"""``cni.main.exit_now``: a CNI exec ends without interpreter teardown, and loses nothing by it.

Each case runs a child interpreter (``os._exit`` ends the process that calls it) and checks what a
runtime or an admin would see: the exit status, stdout, stderr, files and atexit work.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Buffered as a runtime's exec is (this environment may set PYTHONUNBUFFERED): what is flushed is seen.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60,
                          check=False)


def test_buffered_output_is_flushed_and_status_kept() -> None:
    # Written through the text layer and the binary buffer, never flushed by the caller.
    p = child("import sys\nfrom cni.main import exit_now\n"
              "sys.stdout.write('{\"a\":'); sys.stdout.buffer.write(b''); sys.stdout.write('1}')\n"
              "sys.stderr.write('warn')\nexit_now(3)")
    assert (p.returncode, p.stdout, p.stderr) == (3, '{"a":1}', "warn")


def test_atexit_handlers_run(tmp_path: Path) -> None:
    mark = tmp_path / "atexit"
    p = child(f"import atexit, sys\nfrom cni.main import exit_now\n"
              f"atexit.register(lambda: (open({str(mark)!r}, 'w').write('done'), sys.stdout.write('late')))\n"
              f"exit_now(0)")
    assert p.returncode == 0 and p.stdout == "late"
    assert mark.read_text() == "done"


def test_unfinished_non_daemon_thread_is_joined(tmp_path: Path) -> None:
    # A live non-daemon thread has work in flight: the ordinary exit (which joins it) is taken.
    mark = tmp_path / "thread"
    p = child(f"import threading, time\nfrom cni.main import exit_now\n"
              f"def work():\n    time.sleep(0.3)\n    open({str(mark)!r}, 'w').write('done')\n"
              f"threading.Thread(target=work).start()\nexit_now(5)")
    assert p.returncode == 5, p.stderr
    assert mark.read_text() == "done"


def test_closed_stdout_does_not_change_the_status() -> None:
    # The reader has gone before the answer is flushed: the broken pipe must not turn 1 into 120.
    p = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cni.main import exit_now\n"
                          "sys.stdout.write('x' * 10)\ntime.sleep(0.5)\nexit_now(1)"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    assert p.wait(timeout=60) == 1
    assert p.stderr.read() == b""
    p.stderr.close()


def test_in_process_main_returns_instead_of_exiting(monkeypatch: pytest.MonkeyPatch,
                                                    capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    # A caller that passes argv (a test, another face) gets the status back: only the program exits
    # early. Were os._exit taken here, this test process would end.
    from cni.main import main

    monkeypatch.setenv("CNI_COMMAND", "VERSION")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"cniVersion":"1.0.0"}')))
    assert main(["multinic", "plugin", "macvlan"]) == 0
    assert b'"supportedVersions"' in capsysbinary.readouterr().out


def test_an_exec_runs_without_the_cyclic_gc_and_in_process_callers_keep_it(
        monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    # The program (argv None) runs the command with gc disabled (a one-command process: collections only
    # cost time); an in-process caller's interpreter is left as it was.
    p = child("import gc, os, sys\nimport cni.main as m\n"
              "m.run_meta = lambda: print('gc during the command:', gc.isenabled()) or 0\n"
              "os.environ['CNI_COMMAND'] = 'VERSION'\nsys.argv = ['multinic']\nm.main()")
    assert (p.returncode, p.stdout.strip()) == (0, "gc during the command: False"), p.stderr
    import gc

    from cni.main import main

    monkeypatch.setenv("CNI_COMMAND", "VERSION")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"cniVersion":"1.0.0"}')))
    assert gc.isenabled()
    assert main(["multinic", "plugin", "macvlan"]) == 0
    assert gc.isenabled()
