"""Prometheus metrics of the daemon (text exposition format 0.0.4), no client library needed."""

from __future__ import annotations

import threading
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.rejected = 0
        self.dynamic: dict[tuple[str, str], int] = {}

    def observe(self, command: str, seconds: float, code: int) -> None:
        with self.lock:
            self.requests[(command, code)] = self.requests.get((command, code), 0) + 1
            h = self.hist.setdefault(command, [0] * len(BUCKETS))
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
            self.sums[command] = self.sums.get(command, 0.0) + seconds
            self.counts[command] = self.counts.get(command, 0) + 1

    def observe_dynamic(self, op: str, result: str) -> None:
        """One change ``dynamicNetworks`` made to a running pod: op add | remove | status, result success | error."""
        with self.lock:
            self.dynamic[(op, result)] = self.dynamic.get((op, result), 0) + 1

    def render(self, limiter: Any) -> str:
        out = [
            "# HELP multinic_cni_requests_total CNI requests served, by command and CNI error code (0 = success).",
            "# TYPE multinic_cni_requests_total counter",
        ]
        with self.lock:
            for (cmd, code), n in sorted(self.requests.items()):
                out.append(f'multinic_cni_requests_total{{command="{cmd}",code="{code}"}} {n}')
            out += ["# HELP multinic_cni_errors_total CNI requests that failed, by CNI error code.",
                    "# TYPE multinic_cni_errors_total counter"]
            errs: dict[int, int] = {}
            for (_, code), n in self.requests.items():
                if code:
                    errs[code] = errs.get(code, 0) + n
            for code, n in sorted(errs.items()):
                out.append(f'multinic_cni_errors_total{{code="{code}"}} {n}')
            out += ["# HELP multinic_cni_request_duration_seconds Latency of CNI requests by command.",
                    "# TYPE multinic_cni_request_duration_seconds histogram"]
            for cmd, h in sorted(self.hist.items()):
                for b, n in zip(BUCKETS, h, strict=True):
                    out.append(f'multinic_cni_request_duration_seconds_bucket{{command="{cmd}",le="{b}"}} {n}')
                out.append(f'multinic_cni_request_duration_seconds_bucket{{command="{cmd}",le="+Inf"}} {self.counts[cmd]}')
                out.append(f'multinic_cni_request_duration_seconds_sum{{command="{cmd}"}} {self.sums[cmd]:.6f}')
                out.append(f'multinic_cni_request_duration_seconds_count{{command="{cmd}"}} {self.counts[cmd]}')
            out += ["# HELP multinic_cni_rejected_total Requests refused because the queue was full.",
                    "# TYPE multinic_cni_rejected_total counter", f"multinic_cni_rejected_total {self.rejected}"]
            out += ["# HELP multinic_dynamic_changes_total Changes dynamicNetworks made to running pods, by operation "
                    "and result.", "# TYPE multinic_dynamic_changes_total counter"]
            for (op, result), n in sorted(self.dynamic.items()):
                out.append(f'multinic_dynamic_changes_total{{op="{op}",result="{result}"}} {n}')
        out += ["# HELP multinic_cni_in_flight Requests being served now.", "# TYPE multinic_cni_in_flight gauge",
                f"multinic_cni_in_flight {limiter.running}",
                "# HELP multinic_cni_queued Requests waiting for a slot.", "# TYPE multinic_cni_queued gauge",
                f"multinic_cni_queued {limiter.waiting}"]
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
                        out += ["# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {kb * 1024}"]
        except OSError:
            pass
        return "\n".join(out) + "\n"
