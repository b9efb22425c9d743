"""doctor's client-certificate check on real certificates made by openssl: the DER walk reads the dates openssl
wrote (UTCTime before 2050, GeneralizedTime after), and the check says FAIL / WARN / OK by time left."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cni.admin import doctor
from tests.support.certs import make_client_cert, self_signed_ca

DAY = 86400.0


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_ca(tmp_path_factory.mktemp("ca"))


def openssl_dates(cert: Path) -> tuple[float, float]:
    """What openssl itself reads as notBefore/notAfter (the oracle for the DER walk)."""
    import calendar

    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-dates"], capture_output=True, text=True,
                         check=True).stdout
    vals = dict(line.split("=", 1) for line in out.splitlines())
    return tuple(float(calendar.timegm(time.strptime(vals[k].strip(), "%b %d %H:%M:%S %Y GMT")))  # type: ignore[return-value]
                 for k in ("notBefore", "notAfter"))


@pytest.mark.parametrize("end", [-3 * DAY, 2 * DAY, 400 * DAY, 40 * 365 * DAY], ids=["expired", "near", "fine", "2066"])
def test_the_der_walk_reads_the_dates_openssl_wrote(tmp_path: Path, ca: tuple[Path, Path], end: float) -> None:
    now = time.time()
    crt, _ = make_client_cert(tmp_path, *ca, now - 10 * DAY, now + end)
    pem = crt.read_bytes()
    want = openssl_dates(crt)
    assert doctor.cert_validity(pem) == want
    assert abs(want[1] - (now + end)) < 2
    der = subprocess.run(["openssl", "x509", "-in", str(crt), "-outform", "DER"], capture_output=True,
                         check=True).stdout
    assert doctor.cert_validity(der) == want


def kc(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(client_cert_data=kw.get("data"), client_cert_file=kw.get("file"))


def test_expired_near_and_fine_by_file_and_by_data(tmp_path: Path, ca: tuple[Path, Path]) -> None:
    now = time.time()
    cases = {"expired": (now - 30 * DAY, now - 2 * DAY, doctor.FAIL, "expired 2d ago"),
             "near": (now - DAY, now + 3 * DAY, doctor.WARN, "expires in"),
             "fine": (now - DAY, now + 90 * DAY, doctor.OK, "expires in"),
             "future": (now + 5 * DAY, now + 90 * DAY, doctor.FAIL, "not valid before")}
    for name, (nb, na, status, text) in cases.items():
        crt, _ = make_client_cert(tmp_path, *ca, nb, na, name=name)
        by_file = doctor.check_client_cert(kc(file=str(crt)))
        by_data = doctor.check_client_cert(kc(data=crt.read_bytes()))
        for got in (by_file, by_data):
            assert got is not None and got.status == status and text in got.detail, (name, got)
            assert (got.fix != "") == (status != doctor.OK)
        assert by_file is not None and str(crt) in by_file.detail
        assert by_data is not None and "client-certificate-data" in by_data.detail


def test_no_certificate_unreadable_and_garbage() -> None:
    assert doctor.check_client_cert(kc()) is None
    missing = doctor.check_client_cert(kc(file="/nonexistent/client.crt"))
    assert missing is not None and missing.status == doctor.FAIL and "cannot read" in missing.detail
    for junk in (b"not a cert", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                 base64.b64decode("MAMCAQE=")):  # SEQUENCE { INTEGER 1 }: DER, but not a certificate
        got = doctor.check_client_cert(kc(data=junk))
        assert got is not None and got.status == doctor.FAIL and "not a readable X.509" in got.detail, junk
