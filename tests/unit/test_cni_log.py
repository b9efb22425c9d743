"""cni.log: Multus-compatible lines, levels, rotation with gzip backups, file mode, redaction."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import re
import stat
import time
from pathlib import Path

import pytest

from cni import log

LINE = re.compile(r"^(\S+) \[(panic|error|verbose|debug)\] (.*)$")


def _logger(level: str = "debug", path: Path | None = None, **opts: object) -> tuple[log.Logger, io.StringIO]:
    lg = log.Logger()
    err = io.StringIO()
    lg.stderr = err
    lg.configure(path=str(path) if path else None, level=level, to_stderr=path is None,
                 options=log.Options(**opts) if opts else None)  # type: ignore[arg-type]
    return lg, err


def test_line_format_is_rfc3339_time_level_message() -> None:
    lg, err = _logger()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lg.error("macvlan: master eth9 not found")
    m = LINE.match(err.getvalue().rstrip("\n"))
    assert m, err.getvalue()
    stamp = dt.datetime.fromisoformat(m.group(1))
    assert stamp.tzinfo is not None, "RFC3339 needs an offset or Z"
    assert abs((stamp - before).total_seconds()) < 5
    assert (m.group(2), m.group(3)) == ("error", "macvlan: master eth9 not found")
    assert err.getvalue().count("\n") == 1


def test_warning_is_an_error_line_with_prefix() -> None:
    lg, err = _logger("error")
    lg.warning("readiness indicator missing")
    assert LINE.match(err.getvalue().strip()).group(2, 3) == ("error", "warning: readiness indicator missing")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("level", "written"),
    [
        ("panic", ["panic"]),
        ("error", ["panic", "error"]),
        ("verbose", ["panic", "error", "verbose"]),
        ("debug", ["panic", "error", "verbose", "debug"]),
        ("DEBUG", ["panic", "error", "verbose", "debug"]),
    ],
)
def test_level_filtering(level: str, written: list[str]) -> None:
    lg, err = _logger(level)
    lg.panic("p")
    lg.error("e")
    lg.verbose("v")
    lg.debug("d")
    assert [LINE.match(x).group(2) for x in err.getvalue().splitlines()] == written  # type: ignore[union-attr]


def test_default_logger_writes_nothing_and_unknown_level_keeps_current() -> None:
    lg = log.Logger()
    lg.stderr = io.StringIO()
    lg.error("x")
    assert lg.stderr.getvalue() == ""
    lg.configure(level="verbose", to_stderr=True)
    lg.configure(level="chatty")
    assert lg.enabled("verbose") and not lg.enabled("debug")


def test_never_writes_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lg, _ = _logger("debug", tmp_path / "m.log")
    lg.to_stderr = True
    lg.stderr = io.StringIO()
    lg.debug("hello")
    assert capsys.readouterr().out == ""


def test_file_is_created_mode_0600_with_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "multus.log"
    lg, _ = _logger("error", path)
    lg.error("one")
    lg.error("two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert [LINE.match(x).group(3) for x in lines] == ["one", "two"]  # type: ignore[union-attr]


def test_unwritable_log_never_raises(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    lg, _ = _logger("error", tmp_path / "f" / "x.log")  # parent is a file
    lg.stderr = io.StringIO()
    lg.error("still fine")
    assert "cannot write log file" in lg.stderr.getvalue()


def _all_lines(path: Path) -> list[str]:
    out = []
    for b in log.backups(str(path)):
        data = gzip.open(b).read() if b.endswith(".gz") else open(b, "rb").read()
        out += data.decode().splitlines()
    out += path.read_text().splitlines()
    return [LINE.match(x).group(3) for x in out]  # type: ignore[union-attr]


def test_size_rotation_makes_gzip_backups_and_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "multus.log"
    lg, _ = _logger("debug", path, max_size_mb=1000 / (1024 * 1024), max_backups=100, max_age_days=0, compress=True)
    msgs = [f"line {i:03d} " + "x" * 60 for i in range(60)]  # ~90 bytes each → ~6 rotations
    for m in msgs:
        lg.debug(m)
    bks = log.backups(str(path))
    assert len(bks) >= 4
    assert all(b.endswith(".log.gz") for b in bks), bks
    assert all(stat.S_IMODE(os.stat(b).st_mode) == 0o600 for b in bks)
    assert path.stat().st_size <= 1000
    assert _all_lines(path) == msgs, "rotation must keep every line, in order"
    for b in bks:
        with gzip.open(b) as f:
            assert len(f.read()) <= 1000
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".log") and f != "multus.log"], "uncompressed backup left"


def test_max_backups_prunes_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "multus.log"
    lg, _ = _logger("debug", path, max_size_mb=500 / (1024 * 1024), max_backups=2, max_age_days=0, compress=True)
    for i in range(40):
        lg.debug(f"line {i:03d} " + "y" * 60)
    bks = log.backups(str(path))
    assert len(bks) == 2
    kept = _all_lines(path)
    assert kept[-1].startswith("line 039") and not kept[0].startswith("line 000")
    assert kept == sorted(kept)


def test_uncompressed_backups_when_compress_is_off(tmp_path: Path) -> None:
    path = tmp_path / "whereabouts.log"
    lg, _ = _logger("debug", path, max_size_mb=300 / (1024 * 1024), max_backups=50, max_age_days=0, compress=False)
    for i in range(12):
        lg.debug(f"entry {i:02d} " + "z" * 50)
    bks = log.backups(str(path))
    assert bks and all(b.endswith(".log") for b in bks)
    assert _all_lines(path) == [f"entry {i:02d} " + "z" * 50 for i in range(12)]


def test_max_age_removes_old_backups(tmp_path: Path) -> None:
    path = tmp_path / "multus.log"
    old = tmp_path / "multus-2001-01-01T00-00-00.000.log.gz"
    old.write_bytes(gzip.compress(b"ancient\n"))
    week = time.time() - 7 * 86400
    os.utime(old, (week, week))
    young = tmp_path / "multus-2001-01-02T00-00-00.000.log.gz"
    young.write_bytes(gzip.compress(b"recent\n"))
    lg, _ = _logger("debug", path, max_size_mb=200 / (1024 * 1024), max_backups=0, max_age_days=5, compress=True)
    for i in range(6):
        lg.debug(f"n {i} " + "w" * 60)
    names = [os.path.basename(b) for b in log.backups(str(path))]
    assert old.name not in names
    assert young.name in names


def test_explicit_rotate_twice_in_one_millisecond_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    opts = log.Options(max_size_mb=1, max_backups=10, max_age_days=0, compress=True)
    for i in range(3):
        path.write_text(f"content {i}\n")
        log.rotate(str(path), opts)
    got = sorted(gzip.open(b).read().decode() for b in log.backups(str(path)))
    assert got == ["content 0\n", "content 1\n", "content 2\n"]


def test_rotate_skips_when_another_process_already_rotated(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_text("fresh file written after someone else's rotation\n")
    log.rotate(str(path), log.Options(compress=False), expect_ino=path.stat().st_ino + 1)
    assert log.backups(str(path)) == []
    assert path.exists()


# ---- redaction --------------------------------------------------------------------------


JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /api/v1/pods Authorization: Bearer abc.DEF-123_xyz~+/=", "abc.DEF-123_xyz"),
        ("authorization: bearer s3cr3tT0ken", "s3cr3tT0ken"),
        (f"kubeconfig user token {JWT} failed", JWT),
        (f"jwt without keyword: {JWT}", "c2lnbmF0dXJlLXBhcnQ"),
        ('{"token": "sha256~abcdefghijkl", "user": "x"}', "sha256~abcdefghijkl"),
        ("token: plainvalue123", "plainvalue123"),
        ("etcd password=hunter2 user=root", "hunter2"),
        ('{"client-key-data": "LS0tLS1CRUdJTi"}', "LS0tLS1CRUdJTi"),
        (
            "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcd\n-----END RSA PRIVATE KEY-----\ndone",
            "MIIEowIBAAKCAQEA1234",
        ),
        ("-----BEGIN EC PRIVATE KEY-----\ntruncatedkeymaterial", "truncatedkeymaterial"),
    ],
)
def test_secrets_are_redacted_in_every_line(text: str, secret: str) -> None:
    assert secret not in log.redact(text)
    lg, err = _logger()
    lg.error(text)
    assert secret not in err.getvalue()
    assert "redacted" in err.getvalue()


def test_redaction_keeps_surrounding_text_and_ordinary_lines() -> None:
    out = log.redact('{"token": "abc123xyz", "pod": "web-0"}')
    assert '"pod": "web-0"' in out and "abc123xyz" not in out
    plain = "ADD: pod default/web-0:uid attached net1 10.0.0.5/24 via macvlan"
    assert log.redact(plain) == plain
    assert log.redact("monkey business") == "monkey business"


@pytest.mark.parametrize("line,secret", [
    ('{"password":"top secret,x"}', "secret,x"),
    ('{"etcd_password": "a\\"b c"} rest', 'b c'),
    ("{'client_key': 'k e y'}", "k e y"),
    ('{"credentials":"zz","ok":1}', "zz"),
    ("token=abc;next=1", "abc"),
])
def test_redaction_masks_whole_values_and_keeps_json_shape(line: str, secret: str) -> None:
    from cni.log import redact

    out = redact(line)
    assert secret not in out and "<redacted>" in out
    if line.startswith('{"') and line.endswith("}"):
        import json

        json.loads(out)  # still a JSON document


def test_scoped_contexts_keep_their_own_settings_while_the_process_keeps_its_own(tmp_path: Path) -> None:
    """The daemon serves pods whose configs name different log files and levels, in parallel threads."""
    import threading

    lg = log.Logger()
    lg.configure(path=str(tmp_path / "process.log"), level="error")
    barrier = threading.Barrier(2)

    def request(name: str, level: str) -> None:
        log.scoped()
        lg.configure(path=str(tmp_path / f"{name}.log"), level=level)
        barrier.wait()  # both are configured before either logs
        lg.verbose(f"{name} verbose")
        lg.error(f"{name} error")

    threads = [threading.Thread(target=request, args=("a", "verbose")),
               threading.Thread(target=request, args=("b", "error"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a = (tmp_path / "a.log").read_text()
    b = (tmp_path / "b.log").read_text()
    assert "a verbose" in a and "a error" in a and "b " not in a
    assert "b error" in b and "verbose" not in b and "a " not in b
    lg.error("after")
    assert (tmp_path / "process.log").read_text().endswith("after\n") and lg.path == str(tmp_path / "process.log")
