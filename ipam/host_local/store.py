"""host-local's on-disk store: the reference layout, byte for byte, so either binary can take over.

Layout (plugins/ipam/host-local/backend/disk, containernetworking-plugins 1.1.1):
- ``<dataDir>/<network>/<ip>``: one file per reserved address, named by the address in its
  canonical text form (Go ``net.IP.String()`` and Python ``str(ip_address)`` agree: RFC 5952
  compression for IPv6), holding ``<containerID>\\r\\n<ifname>``. Files holding only
  ``<containerID>`` were written by old reference versions; they match any ifname of that
  container, as in the reference.
- ``<dataDir>/<network>/last_reserved_ip.<rangeset index>``: the address last reserved in that
  range set, no trailing newline (the reference parses the bytes as they are).
- ``<dataDir>/<network>/lock``: every operation holds an exclusive ``flock`` on it, the same
  lock the reference takes, so both can run on one node at once.

Differences that stay compatible: a reservation is written to a temporary file and
hard-linked into place (``link`` fails when the name exists), so a crash never leaves an empty
reservation that nobody owns; ``last_reserved_ip`` is overwritten in place under the lock, as the
reference does (a rename over it costs an ext4 flush). Files we create are
0600 (the reference uses 0644; both run as root, so either can read the other's); directories
are 0755 as in the reference. ``OSError`` becomes CNI error 5 naming the path.
"""

from __future__ import annotations

import bisect
import errno
import ipaddress
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from cni import faults, fslock
from cni.spec.errors import IOFailure
from cni.spec.result import IPAddress

from .allocator import Owner

LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_FILE = "lock"
LINE_BREAK = "\r\n"
TMP_PREFIX = ".multinic-tmp-"
FILE_MODE = 0o600
DIR_MODE = 0o755


def _io(doing: str, exc: OSError) -> IOFailure:
    return IOFailure(f"host-local: {doing}: {exc.strerror or exc}", f"errno {exc.errno}")


def _parse_ip_name(name: str) -> IPAddress | None:
    # Cheap filter first: a directory of 60 000 reservations is listed on every ADD.
    if not name or not (name[0].isdigit() or name[0] in "abcdef:") or ("." not in name and ":" not in name):
        return None
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def owner_text(owner: Owner) -> str:
    """The file content for ``owner`` (the reference trims the container ID)."""
    return owner.container_id.strip() + LINE_BREAK + owner.ifname


def parse_owner_text(text: str) -> tuple[str, str | None]:
    """(containerID, ifname) from a reservation file; ifname None for the legacy one-line form."""
    text = text.strip()
    cid, sep, ifname = text.partition(LINE_BREAK)
    return (cid, ifname) if sep else (text, None)


class DiskStore:
    """The reservations of one network directory. Only use it inside ``locked``."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self._ips: dict[IPAddress, str] | None = None  # address → file name
        self._sorted: dict[int, list[int]] = {}
        self._content: dict[IPAddress, str] = {}

    # -- listing ------------------------------------------------------------------------

    def _listing(self) -> dict[IPAddress, str]:
        if self._ips is None:
            try:
                names = os.listdir(self.dir)
            except OSError as exc:
                raise _io(f"cannot list {self.dir}", exc) from None
            ips: dict[IPAddress, str] = {}
            for name in names:
                ip = _parse_ip_name(name)
                if ip is not None:
                    ips[ip] = name
            self._ips = ips
            self._sorted = {
                4: sorted(int(ip) for ip in ips if ip.version == 4),
                6: sorted(int(ip) for ip in ips if ip.version == 6),
            }
        return self._ips

    def _read(self, ip: IPAddress) -> str | None:
        """A reservation's content, or None when the file vanished or cannot be read."""
        if ip in self._content:
            return self._content[ip]
        name = self._listing().get(ip)
        if name is None:
            return None
        try:
            with open(os.path.join(self.dir, name), encoding="utf-8", errors="replace", newline="") as f:
                text = f.read()
        except OSError:
            return None  # the reference skips unreadable files too
        self._content[ip] = text
        return text

    def _forget(self, ip: IPAddress) -> None:
        listing = self._listing()
        listing.pop(ip, None)
        self._content.pop(ip, None)
        lst = self._sorted[ip.version]
        k = bisect.bisect_left(lst, int(ip))
        if k < len(lst) and lst[k] == int(ip):
            del lst[k]

    def _remember(self, ip: IPAddress, name: str) -> None:
        listing = self._listing()
        if ip not in listing:
            listing[ip] = name
            bisect.insort(self._sorted[ip.version], int(ip))

    def _remove(self, ip: IPAddress) -> bool:
        name = self._listing().get(ip, str(ip))
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _io(f"cannot release {ip} (remove {os.path.join(self.dir, name)})", exc) from None
        self._forget(ip)
        return True

    def _write_tmp(self, text: str) -> str:
        tmp = os.path.join(self.dir, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _io(f"cannot write in {self.dir}", exc) from None
        return tmp

    # -- the allocator's Store -----------------------------------------------------------

    def reserve(self, ip: IPAddress, owner: Owner, rangeset_id: int) -> bool:
        name = str(ip)
        path = os.path.join(self.dir, name)
        text = owner_text(owner)
        tmp = self._write_tmp(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            self._remember(ip, name)  # someone outside our listing holds it: never offer it again
            return False
        except OSError as exc:
            raise _io(f"cannot reserve {ip} ({path})", exc) from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._remember(ip, name)
        self._content[ip] = text
        faults.point("after-ipam-reserve")
        self._write_last_reserved(rangeset_id, ip)
        return True

    def _write_last_reserved(self, rangeset_id: int, ip: IPAddress) -> None:
        """Overwrite ``last_reserved_ip.<id>`` in place (write, then truncate to the new length).

        Not tmp + rename: replacing an existing file by rename makes ext4 (auto_da_alloc) flush
        it, ≈3 ms per ADD here. In place is safe: every reader (we and the reference) holds the
        network's flock, and a crash mid-write leaves at worst an unparsable or different
        address, which only moves where the next round-robin search starts (``last_reserved``
        returns None for garbage) — the reference writes this file in place too.
        """
        path = os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{rangeset_id}")
        data = str(ip).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
        except OSError as exc:
            raise _io(f"cannot record the last reserved address in {self.dir}", exc) from None

    def release_ip(self, ip: IPAddress, owner: Owner) -> None:
        text = self._read(ip)
        if text is not None and self._matches(text, owner, legacy=True):
            self._remove(ip)

    def owned_by(self, owner: Owner) -> list[IPAddress]:
        """Exact and legacy (containerID-only) matches, like the reference ``GetByID``."""
        out = []
        for ip in list(self._listing()):
            text = self._read(ip)
            if text is not None and self._matches(text, owner, legacy=True):
                out.append(ip)
        return out

    def last_reserved(self, rangeset_id: int) -> IPAddress | None:
        try:
            with open(os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{rangeset_id}"), encoding="ascii", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return None  # missing or unreadable: we only lose round-robin once (as the reference)
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None

    def taken(self, version: int) -> Sequence[int]:
        self._listing()
        return self._sorted[version]

    # -- DEL / CHECK / GC -------------------------------------------------------------------

    @staticmethod
    def _matches(text: str, owner: Owner, *, legacy: bool) -> bool:
        cid, ifname = parse_owner_text(text)
        if cid != owner.container_id.strip():
            return False
        return ifname == owner.ifname or (legacy and ifname is None)

    def release(self, owner: Owner) -> list[IPAddress]:
        """Release ``owner``'s reservations; legacy (containerID-only) files only when no exact one exists (reference)."""
        exact, old = [], []
        for ip in list(self._listing()):
            text = self._read(ip)
            if text is None:
                continue
            if self._matches(text, owner, legacy=False):
                exact.append(ip)
            elif self._matches(text, owner, legacy=True):
                old.append(ip)
        gone = exact or old
        for ip in gone:
            self._remove(ip)
        return gone

    def gc(self, keep: set[Owner]) -> list[IPAddress]:
        """Release every reservation whose attachment is not in ``keep``; drop our crash leftovers."""
        keep_cids = {o.container_id for o in keep}
        gone = []
        for ip in list(self._listing()):
            text = self._read(ip)
            if text is None:
                continue
            cid, ifname = parse_owner_text(text)
            if not cid:
                pass  # empty: the reference crashed between create and write; nobody can own it
            elif ifname is None:
                if cid in keep_cids:
                    continue
            elif Owner(cid, ifname) in keep:
                continue
            self._remove(ip)
            gone.append(ip)
        try:
            leftovers = [n for n in os.listdir(self.dir) if n.startswith(TMP_PREFIX)]
        except OSError:
            leftovers = []
        for n in leftovers:
            try:
                os.unlink(os.path.join(self.dir, n))
            except OSError:
                pass
        return gone

    def all_reservations(self) -> dict[IPAddress, tuple[str, str | None]]:
        """Address → (containerID, ifname) for every readable reservation (diagnostics and tests)."""
        out = {}
        for ip in list(self._listing()):
            text = self._read(ip)
            if text is not None:
                out[ip] = parse_owner_text(text)
        return out


@contextmanager
def locked(data_dir: str, network: str, *, create: bool = True) -> Iterator[DiskStore | None]:
    """The store of ``<data_dir>/<network>`` with its lock held; None when it does not exist and ``create`` is false."""
    directory = os.path.join(data_dir, network)
    if create:
        try:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise _io(f"cannot create the data directory {directory}", exc) from None
    elif not os.path.isdir(directory):
        yield None
        return
    lock_path = os.path.join(directory, LOCK_FILE)
    try:
        fd = fslock.acquire(lock_path, FILE_MODE)  # the reference's lock file: both binaries serialise on it
    except OSError as exc:
        if not create and exc.errno == errno.ENOENT:  # the directory vanished under us
            yield None
            return
        raise _io(f"cannot open the lock file {lock_path}", exc) from None
    try:
        yield DiskStore(directory)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
