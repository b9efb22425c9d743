"""etcd v3 store for whereabouts, over etcd's gRPC-gateway JSON API (stdlib http.client; no etcd library).

Keys (``prefix`` defaults to ``/whereabouts/``)::

    <prefix>ippools/<pool name>                          an IPPool object (the CRD's JSON)
    <prefix>overlappingrangeipreservations/<name>        an OverlappingRangeIPReservation object

Rules:
- The API is etcd's HTTP/JSON gateway on the client port (``POST /v3/kv/range``, ``/v3/kv/txn``; etcd 3.4 serves
  ``/v3/``): keys and values are base64, int64 fields are decimal strings, fields at their zero value are omitted.
- Every write is a transaction guarded by a compare: a pool write compares ``mod_revision`` with the one read (or
  ``create_revision == 0`` to create), a reservation is created only if ``create_revision == 0`` and deleted only at
  the ``mod_revision`` read. A guarded transaction is safe to resend: if the first attempt did commit, the resend's
  compare fails and the caller re-reads — so a request that died with its member is simply retried on another one.
- Endpoints are tried in turn; a refused/reset/timed-out connection or a 5xx/"no leader"/"timed out" answer moves to
  the next one. Only when every endpoint failed does the caller see ``StoreUnavailable`` (code 11).
- TLS (``etcd_ca_cert_file``, ``etcd_cert_file``/``etcd_key_file``) and username/password auth (a token from
  ``/v3/auth/authenticate``, sent as ``Authorization``) are supported; the password never appears in a message.
"""

from __future__ import annotations

import base64
import random
import socket
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson

from cni.spec.errors import PolicyDenied

from . import slices
from .allocator import Allocation
from .slices import SlicePool
from .store import (
    API_VERSION,
    POOL_PLURAL,
    RES_PLURAL,
    BatchConflict,
    Conflict,
    PoolSnapshot,
    Reservation,
    StoreUnavailable,
    owned_by,
    pool_from_object,
    pool_object,
    reservation_from_object,
    reservation_object,
)

if TYPE_CHECKING:  # pragma: no cover
    import http.client
    import ssl

    from .config import EtcdConf


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(key: bytes) -> bytes:
    """The smallest key after every key starting with ``key`` (etcd's range_end for a prefix)."""
    b = bytearray(key)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


class EtcdError(Exception):
    """etcd answered with an application error (HTTP 4xx with a gRPC status)."""


class EtcdClient:
    """A minimal etcd v3 JSON-gateway client with endpoint failover. Thread-safe (one request at a time)."""

    def __init__(self, endpoints: tuple[str, ...] | list[str], *, timeout: float = 3.0, username: str = "",
                 password: str = "", ca_file: str = "", cert_file: str = "", key_file: str = "",
                 total_timeout: float = 20.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.total_timeout = total_timeout
        self._username = username
        self._password = password
        self._ca_file, self._cert_file, self._key_file = ca_file, cert_file, key_file
        self._ssl: ssl.SSLContext | None = None
        self._token: str | None = None
        self._cur = random.randrange(len(self.endpoints))  # spread nodes over members
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"EtcdClient({self.endpoints!r})"

    # -- transport --

    def _ssl_context(self) -> ssl.SSLContext:
        import ssl

        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self._ca_file or None)
            if self._cert_file:
                try:
                    ctx.load_cert_chain(self._cert_file, self._key_file or None)
                except (OSError, ssl.SSLError) as e:
                    from cni.spec.errors import InvalidConfig

                    raise InvalidConfig("cannot load the etcd client certificate (etcd_cert_file/etcd_key_file)",
                                        type(e).__name__) from None
            self._ssl = ctx
        return self._ssl

    def _connect(self, endpoint: str) -> http.client.HTTPConnection:
        import http.client

        u = urllib.parse.urlsplit(endpoint)
        host = u.hostname or "127.0.0.1"
        if u.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, u.port or 2379, timeout=self.timeout, context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(host, u.port or 2379, timeout=self.timeout)
        conn.connect()
        # http.client sends the headers and the body in two writes: without TCP_NODELAY the body waits for the
        # ACK of the headers (Nagle vs delayed ACK), which costs more than the etcd request itself.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _once(self, endpoint: str, path: str, body: dict[str, Any], auth: bool) -> tuple[int, Any]:
        import http.client
        import ssl

        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = self._connect(endpoint)
                headers = {"Content-Type": "application/json"}
                if auth and self._token:
                    headers["Authorization"] = self._token
                self._conn.request("POST", path, body=orjson.dumps(body), headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._drop()
                try:
                    doc = orjson.loads(data) if data else {}
                except orjson.JSONDecodeError:
                    doc = {"error": data[:200].decode("utf-8", "replace")}
                return resp.status, doc
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                self._drop()
                if reused and attempt == 0:
                    continue  # the member closed an idle keep-alive connection
                raise
            except (OSError, http.client.HTTPException, ssl.SSLError):
                self._drop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self, endpoint: str) -> None:
        status, doc = self._once(endpoint, "/v3/auth/authenticate",
                                 {"name": self._username, "password": self._password}, auth=False)
        if status != 200 or not doc.get("token"):
            raise PolicyDenied(f"etcd at {endpoint} refused the credentials of user {self._username!r}",
                               str(doc.get("message") or doc.get("error") or f"HTTP {status}"))
        self._token = str(doc["token"])

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on a healthy member; fail over on transport or server errors."""
        import http.client
        import ssl

        deadline = time.monotonic() + self.total_timeout
        problems: list[str] = []
        with self._lock:
            n = len(self.endpoints)
            tries = 0
            answered = False  # some member answered (e.g. "no leader" during an election): worth waiting longer
            while True:
                endpoint = self.endpoints[self._cur % n]
                try:
                    if self._username and self._token is None:
                        self._authenticate(endpoint)
                    status, doc = self._once(endpoint, path, body, auth=True)
                    if status == 401 or (status != 200 and "token" in str(doc.get("message", "")) and self._username):
                        self._token = None
                        self._authenticate(endpoint)
                        status, doc = self._once(endpoint, path, body, auth=True)
                    if status == 200:
                        return doc if isinstance(doc, dict) else {}
                    msg = str(doc.get("message") or doc.get("error") or f"HTTP {status}")
                    # 5xx and "no leader"/"timed out"/"unavailable": this member cannot serve now, try another.
                    retriable = status >= 500 or any(w in msg for w in ("leader", "timed out", "unavailable",
                                                                       "stopped", "too many requests"))
                    if not retriable:
                        raise EtcdError(f"etcd {endpoint}{path}: {msg}")
                    problems.append(f"{endpoint}: {msg}")
                    answered = True
                except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                    problems.append(f"{endpoint}: {getattr(e, 'strerror', None) or type(e).__name__}")
                self._drop()
                self._cur += 1
                tries += 1
                # Nobody listening at all: give up after three rounds; a leaderless cluster gets until the deadline.
                if time.monotonic() > deadline or (not answered and tries >= 3 * n):
                    break
                if tries % n == 0:
                    time.sleep(min(0.05 * (tries // n), 0.5) + random.uniform(0, 0.05))
        raise StoreUnavailable(f"etcd unreachable: no member of {', '.join(self.endpoints)} answered {path}",
                               "; ".join(problems[-n:]))

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- kv --

    def get(self, key: bytes) -> tuple[bytes, str] | None:
        """(value, mod_revision) or None."""
        doc = self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return _unb64(kv.get("value", "")), str(kv.get("mod_revision", "0"))

    def get_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes, str]]:
        doc = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [(_unb64(kv.get("key", "")), _unb64(kv.get("value", "")), str(kv.get("mod_revision", "0")))
                for kv in doc.get("kvs") or []]

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure or []})

    def put_if(self, key: bytes, value: bytes, mod_revision: str | None) -> str | None:
        """Put if the key is at ``mod_revision`` (None: if it does not exist). The new mod_revision when written."""
        if mod_revision is None:
            cmp = {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
        else:
            cmp = {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod_revision}
        doc = self.txn([cmp], [{"request_put": {"key": _b64(key), "value": _b64(value)}}])
        if not doc.get("succeeded"):
            return None
        return str((doc.get("header") or {}).get("revision") or "0")  # a txn's writes all get its revision

    def delete_if(self, key: bytes, mod_revision: str) -> bool:
        cmp = {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod_revision}
        doc = self.txn([cmp], [{"request_delete_range": {"key": _b64(key)}}])
        return bool(doc.get("succeeded"))


class EtcdStore:
    kind = "etcd"

    def __init__(self, conf: EtcdConf, client: EtcdClient | None = None) -> None:
        self.conf = conf
        self.namespace = conf.namespace
        self.client = client or EtcdClient(conf.endpoints, username=conf.username, password=conf.password,
                                           ca_file=conf.ca_file, cert_file=conf.cert_file, key_file=conf.key_file)
        self._prefix = conf.prefix.encode()

    def _key(self, plural: str, name: str) -> bytes:
        return self._prefix + f"{plural}/{name}".encode()

    def _wrap(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except EtcdError as e:
            raise StoreUnavailable(str(e), "etcd refused the request") from None

    # -- pools --

    def read_pool(self, name: str, cidr: str) -> PoolSnapshot:
        got = self._wrap(self.client.get, self._key(POOL_PLURAL, name))
        if got is None:
            return PoolSnapshot(name, cidr, {}, None)
        value, rev = got
        return pool_from_object(orjson.loads(value), rev, cidr)

    def _pool_value(self, snap: PoolSnapshot, allocations: dict[int, Allocation]) -> tuple[dict[str, Any], bytes]:
        obj = pool_object(snap.name, snap.range, allocations, self.namespace,
                          snap.raw if isinstance(snap.raw, dict) else None)
        obj["metadata"].pop("resourceVersion", None)  # the etcd revision is the version; do not store a stale one
        return obj, orjson.dumps(obj)

    def write_pool(self, snap: PoolSnapshot, allocations: dict[int, Allocation]) -> PoolSnapshot:
        obj, value = self._pool_value(snap, allocations)
        rev = self._wrap(self.client.put_if, self._key(POOL_PLURAL, snap.name), value, snap.version)
        if rev is None:
            raise Conflict(snap.name)
        return PoolSnapshot(snap.name, snap.range, dict(allocations), rev, obj)

    def write_pool_reserving(self, snap: PoolSnapshot, allocations: dict[int, Allocation],
                             create: list[Reservation], keep: list[Reservation]) -> PoolSnapshot:
        """The pool write and the reservations of its new entries in ONE transaction (one round trip, and no
        window with a reservation but no entry): the pool must still be at ``snap.version``, every ``create`` must
        not exist yet and every ``keep`` (made by an earlier try) must be unchanged. ``BatchConflict`` otherwise,
        with what each of those reservations is now."""
        assert snap.version is not None  # creating a pool goes through write_pool
        _obj, value = self._pool_value(snap, allocations)
        pkey = _b64(self._key(POOL_PLURAL, snap.name))
        compare: list[dict[str, Any]] = [{"key": pkey, "result": "EQUAL", "target": "MOD",
                                          "mod_revision": snap.version}]
        success: list[dict[str, Any]] = [{"request_put": {"key": pkey, "value": _b64(value)}}]
        failure: list[dict[str, Any]] = []
        for res in create:
            k = _b64(self._key(RES_PLURAL, res.name))
            compare.append({"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"})
            success.append({"request_put": {"key": k, "value": _b64(orjson.dumps(
                reservation_object(res, self.namespace)))}})
            failure.append({"request_range": {"key": k}})
        for res in keep:
            k = _b64(self._key(RES_PLURAL, res.name))
            compare.append({"key": k, "result": "EQUAL", "target": "MOD", "mod_revision": res.version or "0"})
            failure.append({"request_range": {"key": k}})
        doc = self._wrap(self.client.txn, compare, success, failure)
        if doc.get("succeeded"):
            rev = str((doc.get("header") or {}).get("revision") or "0")
            return PoolSnapshot(snap.name, snap.range, dict(allocations), rev, _obj)
        now: dict[str, Reservation | None] = {}
        for res, resp in zip([*create, *keep], doc.get("responses") or [], strict=False):
            kvs = ((resp or {}).get("response_range") or {}).get("kvs") or []
            now[res.name] = (reservation_from_object(orjson.loads(_unb64(kvs[0].get("value", ""))),
                                                     str(kvs[0].get("mod_revision", "0"))) if kvs else None)
        raise BatchConflict(snap.name, now)

    def list_pools(self) -> list[PoolSnapshot]:
        out = []
        for _key, value, rev in self._wrap(self.client.get_prefix, self._prefix + f"{POOL_PLURAL}/".encode()):
            try:
                out.append(pool_from_object(orjson.loads(value), rev))
            except orjson.JSONDecodeError:
                continue
        return out

    # -- reservations --

    def reserve(self, res: Reservation) -> Reservation:
        key = self._key(RES_PLURAL, res.name)
        value = orjson.dumps(reservation_object(res, self.namespace))
        for _ in range(5):
            rev = self._wrap(self.client.put_if, key, value, None)
            if rev is not None:
                return Reservation(res.name, res.container_id, res.podref, res.ifname, rev)
            cur = self.get_reservation(res.name)
            if cur is not None:
                return cur
        raise StoreUnavailable(f"etcd: reservation {res.name} keeps appearing and vanishing; retry")

    def get_reservation(self, name: str) -> Reservation | None:
        got = self._wrap(self.client.get, self._key(RES_PLURAL, name))
        if got is None:
            return None
        return reservation_from_object(orjson.loads(got[0]), got[1])

    def release(self, res: Reservation) -> None:
        key = self._key(RES_PLURAL, res.name)
        # Fast path, one round trip: delete if the stored value is exactly the one ``reserve`` writes for this owner.
        mine = _b64(orjson.dumps(reservation_object(res, self.namespace)))
        doc = self._wrap(self.client.txn, [{"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": mine}],
                         [{"request_delete_range": {"key": _b64(key)}}])
        if doc.get("succeeded"):
            return
        for _ in range(5):
            cur = self.get_reservation(res.name)
            if cur is None or not cur.same_owner(res):
                return
            assert cur.version is not None
            if self._wrap(self.client.delete_if, key, cur.version):
                return

    def list_reservations(self) -> list[Reservation]:
        out = []
        for _key, value, rev in self._wrap(self.client.get_prefix, self._prefix + f"{RES_PLURAL}/".encode()):
            try:
                out.append(reservation_from_object(orjson.loads(value), rev))
            except orjson.JSONDecodeError:
                continue
        return out

    def find_reservations(self, container_id: str, ifname: str) -> list[Reservation]:
        return owned_by(self.list_reservations(), container_id, ifname)

    # -- node slices --

    def read_slices(self, name: str) -> SlicePool:
        got = self._wrap(self.client.get, self._key(slices.PLURAL, name))
        if got is None:
            return SlicePool(name, "", "", [], None)
        return slices.from_object(orjson.loads(got[0]), got[1])

    def list_slices(self) -> list[SlicePool]:
        out = []
        for _key, value, rev in self._wrap(self.client.get_prefix, self._prefix + f"{slices.PLURAL}/".encode()):
            try:
                out.append(slices.from_object(orjson.loads(value), rev))
            except orjson.JSONDecodeError:
                continue
        return out

    def write_slices(self, pool: SlicePool) -> None:
        obj = slices.to_object(pool, self.namespace, API_VERSION)
        if self._wrap(self.client.put_if, self._key(slices.PLURAL, pool.name), orjson.dumps(obj),
                      pool.version) is None:
            raise Conflict(pool.name)

    def delete_pool(self, snap: PoolSnapshot) -> None:
        if snap.version is None:
            return
        if not self._wrap(self.client.delete_if, self._key(POOL_PLURAL, snap.name), snap.version):
            if self._wrap(self.client.get, self._key(POOL_PLURAL, snap.name)) is not None:
                raise Conflict(snap.name)

    def ping(self) -> None:
        self._wrap(self.client.get, self._prefix + b"ping")

    def close(self) -> None:
        self.client.close()
