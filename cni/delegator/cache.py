"""The attachment cache: what was planned and what each attachment returned, per container.

Rules (Multus #948/#1087/#355 leak IPs because a missing or corrupt cache ends DEL early):
- The plan is written BEFORE the kernel is touched, results after each attachment, so a
  crash at any point leaves a record of everything that may exist.
- Writes are atomic: temp file in the same directory, rename (``cni.atomicfile``). Only the
  plan is also durable (fsync of the file and the directory): it is what lets DEL/GC find
  everything after a node crash. The results and states written after it, the final record
  included, are not: a power cut that loses them also removes the kernel objects they describe
  (the pod's namespace, its links, the netfilter rules), and DEL works from the plan alone
  (plugins DEL without prevResult). Files 0600, directory 0700 (they hold pod identity and configs).
- JSON Lines: a header line that carries the pod identity AND the whole plan, then one
  line per attachment with its state and result. A file cut short by something outside
  our control (a full disk, a copy interrupted, an editor) loses at most the tail: the
  header alone still names every attachment that may exist, so DEL cleans them all. Each
  attachment line repeats its attachment, so a damaged header is survived too.
- The file name is the container ID, validated as a path component.
- ``.history`` (same directory, 0600) has one line per plan written: ``<containerID> <unix time> <ns>/<pod>``.
  It outlives a record lost any other way than a completed DEL (which drops the container's lines, so the node
  keeps nothing naming a finished sandbox), so ``multinic leaks`` can tell a shared-store whereabouts allocation
  made on this node from another node's, and how old it is. Appended and rewritten in place under an flock on the
  file itself, not fsynced; past ``HISTORY_MAX`` bytes the newest half is kept. Losing lines only makes leaks
  more conservative.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..atomicfile import atomic_write, sweep_temp
from ..spec.args import safe_path_component
from .plan import Attachment

if TYPE_CHECKING:
    from ..spec.result import Result

KIND = "multinicCacheV1"
HISTORY = ".history"
HISTORY_MAX = 1 << 20

# planned: in the plan, not made (yet); added: made, ``result`` recorded; failed: its ADD failed and undid itself.
State = Literal["planned", "added", "failed"]
STATES: frozenset[str] = frozenset(get_args(State))


@dataclass
class Entry:
    attachment: Attachment
    state: State = "planned"
    result: dict[str, Any] | None = None  # the wire result, in the conflist's version
    dynamic: bool = False  # made by a hot-plug on a running sandbox (``hotplug``), not by the runtime's ADD


@dataclass
class Record:
    container_id: str
    netns: str = ""
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    entries: list[Entry] = field(default_factory=list)
    damaged: bool = False  # some lines could not be read
    cni_path: tuple[str, ...] = ()  # the runtime's CNI_PATH: a hot-plug execs non-native plugins from it too


def to_wire_safe(res: Result, att: Attachment) -> dict[str, Any]:
    """Cache form of a result in the attachment's version; 0.1/0.2 results without IPs cached as 1.1."""
    from ..spec.errors import CNIError
    from ..spec.result import to_wire

    try:
        return to_wire(res, att.conflist.cni_version)
    except CNIError:
        return to_wire(res, "1.1.0")


def cached_result(entry: Entry) -> Result | None:
    """An entry's cached result, or None when there is none or it cannot be read (DEL goes on without it)."""
    if not entry.result:
        return None
    from ..spec.errors import CNIError
    from ..spec.result import from_wire

    try:
        return from_wire(entry.result)
    except CNIError:
        return None


def path_for(cache_dir: str, container_id: str) -> str:
    return os.path.join(cache_dir, safe_path_component(container_id, what="container ID"))


def save(cache_dir: str, rec: Record, *, durable: bool = True) -> None:
    """Write the record atomically. Only the plan needs ``durable`` (fsync): it is what lets
    DEL/GC find everything after a node crash; later updates add results, which DEL can do
    without (plugins DEL without prevResult), so they skip the fsyncs (≈ 2–4 ms each here)."""
    import orjson

    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        from ..spec.errors import IOFailure

        raise IOFailure(f"cannot create the attachment cache directory {cache_dir!r}", exc.strerror or str(exc)) from None
    lines = [orjson.dumps({"kind": KIND, "containerID": rec.container_id, "netns": rec.netns,
                           "podNamespace": rec.pod_namespace, "podName": rec.pod_name, "podUID": rec.pod_uid,
                           "cniPath": list(rec.cni_path),
                           "plan": [e.attachment.to_json() for e in rec.entries]})]
    for e in rec.entries:
        line: dict[str, Any] = {"attachment": e.attachment.to_json(), "state": e.state, "result": e.result}
        if e.dynamic:
            line["dynamic"] = True
        lines.append(orjson.dumps(line))
    data = b"\n".join(lines) + b"\n"
    try:
        atomic_write(path_for(cache_dir, rec.container_id), data, durable=durable)
    except OSError as exc:
        from ..spec.errors import IOFailure

        raise IOFailure(f"cannot write the attachment cache in {cache_dir}", exc.strerror or str(exc)) from None
    if durable:  # the plan: a sandbox this node is about to make (or remake)
        _note_history(cache_dir, rec)


def _history_fd(cache_dir: str, create: bool) -> int:
    """``.history`` opened for appending and flocked: appends, the trim and ``forget`` rewrite it in place under
    the lock, so none of them loses another's line (a rename would move the lock to a new inode)."""
    import fcntl

    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(os.path.join(cache_dir, HISTORY), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, data)  # O_APPEND: at the new end, 0


def _note_history(cache_dir: str, rec: Record) -> None:
    import time

    line = f"{rec.container_id} {int(time.time())} {rec.pod_namespace}/{rec.pod_name}\n".encode()
    try:
        fd = _history_fd(cache_dir, create=True)
        try:
            os.write(fd, line)
            if os.fstat(fd).st_size > HISTORY_MAX:
                data = _read_all(fd)
                keep = data[len(data) // 2:]
                _rewrite(fd, keep[keep.find(b"\n") + 1:])
        finally:
            os.close(fd)
    except OSError:
        pass  # advisory: the record itself is what DEL needs


def forget_history(cache_dir: str, container_id: str) -> None:
    """Drop the container's lines: a sandbox whose DEL completed leaves nothing that names it on the node. What
    stays in ``.history`` is the sandboxes that are live or whose DEL never completed, which is what leaks needs."""
    prefix = container_id.encode() + b" "
    try:
        fd = _history_fd(cache_dir, create=False)
    except OSError:
        return  # no history: nothing to forget
    try:
        data = _read_all(fd)
        kept = b"".join(ln for ln in data.splitlines(keepends=True) if not ln.startswith(prefix))
        if kept != data:
            _rewrite(fd, kept)
    except OSError:
        pass  # advisory, as above
    finally:
        os.close(fd)


def history(cache_dir: str) -> dict[str, tuple[float, str]]:
    """containerID -> (when its plan was last written, "ns/pod"), from ``.history``: the latest plan, so a
    re-ADD or hot-plug counts as recent (leaks' grace period is about the newest ADD that may be in flight)."""
    out: dict[str, tuple[float, str]] = {}
    try:
        with open(os.path.join(cache_dir, HISTORY), "rb") as f:
            data = f.read()
    except OSError:
        return out
    for raw in data.decode(errors="replace").splitlines():
        parts = raw.split(" ")
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # a line cut by the trim or a crash
        out[parts[0]] = (float(parts[1]), parts[2])
    return out


def load(cache_dir: str, container_id: str) -> Record | None:
    """The cached record, or None when there is none. Damaged lines are skipped, not fatal."""
    import orjson

    try:
        with open(path_for(cache_dir, container_id), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    rec = Record(container_id=container_id)
    planned: list[Attachment] = []
    lines: dict[int, Entry] = {}  # attachment index -> entry read from its own line
    for n, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if n == 0 and isinstance(obj, dict) and obj.get("kind") == KIND:
                rec.netns = str(obj.get("netns", ""))
                rec.pod_namespace = str(obj.get("podNamespace", ""))
                rec.pod_name = str(obj.get("podName", ""))
                rec.pod_uid = str(obj.get("podUID", ""))
                rec.cni_path = tuple(str(p) for p in obj.get("cniPath") or ())
                for a in obj.get("plan") or []:
                    try:
                        planned.append(Attachment.from_json(a))
                    except Exception:  # noqa: BLE001 - keep the others
                        rec.damaged = True
                continue
            att = Attachment.from_json(obj["attachment"])
            state = obj.get("state", "planned")
            if state not in STATES:
                rec.damaged = True  # an unknown state cannot be trusted to mean "not made"
                state = "planned"
            lines[att.index] = Entry(att, state, obj.get("result"), obj.get("dynamic") is True)
        except Exception:  # noqa: BLE001 - any damage: keep what can be read
            rec.damaged = True
    by_index = {a.index: Entry(a) for a in planned}
    by_index.update(lines)
    if planned and len(lines) < len(planned):
        rec.damaged = True  # the plan names attachments whose own line is missing
    rec.entries = [by_index[i] for i in sorted(by_index)]
    return rec


def remove(cache_dir: str, container_id: str) -> None:
    """Drop the container's record, its ``.history`` lines, and any temp file a writer killed mid-write left for
    it."""
    try:
        os.unlink(path_for(cache_dir, container_id))
    except FileNotFoundError:
        pass
    forget_history(cache_dir, container_id)
    sweep_temp(cache_dir, os.path.basename(path_for(cache_dir, container_id)))


def sweep(cache_dir: str) -> int:
    """GC: remove every temp file whose writer is gone (a crash inside ``save``)."""
    return sweep_temp(cache_dir)


def list_ids(cache_dir: str) -> list[str]:
    try:
        return sorted(f for f in os.listdir(cache_dir) if not f.startswith("."))
    except FileNotFoundError:
        return []
