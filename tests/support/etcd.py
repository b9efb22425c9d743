"""A real 3-member etcd cluster on loopback ports for tests (Debian ``etcd-server`` 3.4, /usr/bin/etcd).

``EtcdCluster(tmpdir).start()`` starts the members with data dirs under ``tmpdir`` and waits until the cluster
answers a linearizable read; ``kill(i)`` SIGKILLs one member (a crash, no graceful leave), ``restart(i)`` brings it
back, ``stop()`` stops every member and is safe to call twice. The ``etcd_cluster`` fixture is module-scoped: one
cluster per test module keeps the suite fast; tests isolate themselves with their own key prefix.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ETCD = "/usr/bin/etcd"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    def __init__(self, workdir: str | os.PathLike[str], members: int = 3) -> None:
        self.workdir = Path(workdir)
        self.n = members
        ports = _free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.names = [f"m{i}" for i in range(members)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self._logs: list[object] = [None] * members

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.client_ports]

    def _cmd(self, i: int, state: str) -> list[str]:
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True))
        return [
            ETCD, "--name", self.names[i], "--data-dir", str(self.workdir / self.names[i]),
            "--listen-client-urls", self.endpoints[i], "--advertise-client-urls", self.endpoints[i],
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"multinic-test-{os.getpid()}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--log-level", "error", "--logger", "zap",
        ]

    def _spawn(self, i: int, state: str) -> None:
        log = open(self.workdir / f"{self.names[i]}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs[i] = log
        self.procs[i] = subprocess.Popen(self._cmd(i, state), stdout=log, stderr=log, start_new_session=True)

    def start(self, timeout: float = 60.0) -> EtcdCluster:
        if not os.access(ETCD, os.X_OK):
            pytest.skip(f"needs {ETCD} (apt-get install etcd-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            self._spawn(i, "new")
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        want = members if members is not None else [i for i in range(self.n) if self.procs[i] is not None]
        while time.monotonic() < deadline:
            if all(self._healthy(i) for i in want):
                return
            for i in want:
                p = self.procs[i]
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"etcd member {self.names[i]} exited: "
                                       f"{(self.workdir / f'{self.names[i]}.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"etcd cluster not ready after {timeout}s")

    def _healthy(self, i: int) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.client_ports[i], timeout=1.0)
            body = json.dumps({"key": base64.b64encode(b"health").decode()})
            conn.request("POST", "/v3/kv/range", body=body, headers={"Content-Type": "application/json"})
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def kill(self, i: int) -> None:
        """Crash member ``i`` (SIGKILL)."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)

    def restart(self, i: int, timeout: float = 20.0) -> None:
        self.kill(i)
        self._spawn(i, "existing")
        self.wait_ready(timeout, [i])

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is None:
                continue
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=5)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(timeout=5)
            self.procs[i] = None
            log = self._logs[i]
            if log is not None:
                log.close()  # type: ignore[attr-defined]
                self._logs[i] = None

    def wipe(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(fallback_dir: Path) -> Iterator[EtcdCluster]:
    """A started 3-member cluster (data in /dev/shm when writable, else under ``fallback_dir``); stopped and wiped after."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(fallback_dir)
    cluster = EtcdCluster(Path(tempfile.mkdtemp(prefix="multinic-etcd-", dir=base)))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.wipe()


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A started 3-member cluster for the whole test module."""
    with running_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def etcd_fresh(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A cluster of the test's own, for tests that kill its members."""
    with running_cluster(tmp_path) as cluster:
        yield cluster
