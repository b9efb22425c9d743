"""Client certificates with chosen validity dates, made by the ``openssl`` CLI (``openssl ca``: OpenSSL 3.0's
``x509``/``req`` cannot set a notBefore in the past, ``ca -startdate/-enddate`` can)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))


def make_client_cert(workdir: Path, ca_cert: Path, ca_key: Path, not_before: float, not_after: float,
                     name: str = "client") -> tuple[Path, Path]:
    """(certificate, key) in PEM, signed by ``ca_cert``/``ca_key``, valid from ``not_before`` to ``not_after``."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI to make certificates")
    d = workdir / f"ca-{name}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\n"
        "policy = p\nunique_subject = no\nx509_extensions = ext\n[p]\ncommonName = supplied\n"
        "[ext]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", "/O=system:nodes/CN=system:node:test")
    run("ca", "-config", "ca.cnf", "-batch", "-notext", "-cert", str(ca_cert), "-keyfile", str(ca_key),
        "-in", f"{name}.csr", "-out", f"{name}.crt", "-startdate", _stamp(not_before), "-enddate", _stamp(not_after))
    return d / f"{name}.crt", d / f"{name}.key"


def self_signed_ca(workdir: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI to make certificates")
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=doctor-test-ca"],
                   cwd=workdir, check=True, capture_output=True)
    return workdir / "ca.crt", workdir / "ca.key"
