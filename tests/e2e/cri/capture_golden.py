"""Capture what containerd 1.6's CRI plugin hands a CNI plugin, and store it as golden input.

    .venv/bin/python -m tests.e2e.cri.capture_golden          # rewrite tests/golden/cri/*.json

A private containerd (tests/e2e/cri/runtime.py) runs one sandbox with CRI port mappings (TCP
without host_ip, UDP with host_ip) and the kubelet bandwidth annotations, and one without. The
CNI conf is the one ``multinic install`` generates (cni.daemon.autoconf.generate) over a cluster
network bridge+host-local+portmap+bandwidth, so the capabilities are declared as they are on a
node; its ``type`` is a recording plugin that stores the exact environment and stdin and answers
a minimal result (go-cni needs an ``eth0`` with a sandbox and an IP).

Each case is ``{"command", "env", "stdin"}``; ``stdin`` is the exact text containerd wrote (its
temp paths included), so decoders are tested on the bytes the runtime sends. The sequence per
sandbox is ADD (RunPodSandbox), DEL with the cached prevResult (StopPodSandbox) and DEL with an
empty CNI_NETNS and no prevResult (RemovePodSandbox: the netns and libcni's cache are gone).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from cni.daemon import autoconf

from .runtime import Containerd, Port, missing

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "cri"

RECORDER = """#!/bin/sh
n=$(date +%s%N)
env | grep -E '^(CNI_|K8S_)' | sort > {cap}/$n.$CNI_COMMAND.env
cat > {cap}/$n.$CNI_COMMAND.stdin
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"%s"}}],"ips":[{{"interface":0,"address":"10.22.0.5/24","gateway":"10.22.0.1"}}]}}' "$CNI_NETNS"
fi
"""

CLUSTER = {"cniVersion": "1.0.0", "name": "cluster", "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
     "ipam": {"type": "host-local", "subnet": "10.22.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": True}},
    {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}


def capture(out: Path) -> list[str]:
    base = Path(tempfile.mkdtemp(prefix="multinic-cri-golden-"))
    cap = base / "capture"
    cap.mkdir()
    c = Containerd(base / "containerd")
    rec = c.bin_dir / "multinic-recorder"
    rec.write_text(RECORDER.format(cap=cap))
    rec.chmod(0o755)
    c.write_conf(autoconf.generate(CLUSTER, shim_type="multinic-recorder"), "00-multinic.conflist")
    cases = [("ports-bandwidth", (Port(80, 8080), Port(53, 5353, "UDP", "127.0.0.1")),
              {"kubernetes.io/ingress-bandwidth": "1M", "kubernetes.io/egress-bandwidth": "2M"}),
             ("plain", (), {})]
    written: list[str] = []
    try:
        c.start()
        assert c.cri is not None
        for name, ports, annotations in cases:
            for f in cap.iterdir():
                f.unlink()
            sid = c.cri.run(c.cri.sandbox_config(f"golden-{name}", uid=f"uid-golden-{name}", ports=ports,
                                                 annotations=annotations))
            c.cri.stop(sid)
            c.cri.remove(sid)
            calls = sorted({f.name.rsplit(".", 1)[0] for f in cap.iterdir()})
            labels = {0: "add", 1: "del-stop", 2: "del-remove"}
            assert len(calls) == 3, calls
            for i, stem in enumerate(calls):
                env = dict(line.split("=", 1) for line in (cap / f"{stem}.env").read_text().splitlines() if "=" in line)
                doc = {"command": env["CNI_COMMAND"], "env": env, "stdin": (cap / f"{stem}.stdin").read_text()}
                path = out / f"containerd-1.6-{name}-{labels[i]}.json"
                path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
                written.append(path.name)
    finally:
        c.cleanup()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return written


def main() -> int:
    why = missing()
    if why:
        sys.stderr.write(f"cannot capture: {why}\n")
        return 1
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in capture(GOLDEN):
        print(os.path.join("tests/golden/cri", name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
