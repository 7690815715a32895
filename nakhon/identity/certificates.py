"""Client certificates for devices that log in with a certificate instead of a password.

On the broker's certificate listener (``require_certificate`` and
``use_identity_as_username``), the certificate's CN is the username, and the
dynamic security plugin applies that device's role as for a password login. A
city with its own PKI issues these itself; for the local stack (and any CA
whose key is at hand) :func:`issue_device_certificate` does it with openssl.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nakhon.domain.identifiers import is_sensor_id

OPENSSL = "/usr/bin/openssl"


class CertificateError(RuntimeError):
    """openssl could not make the certificate (its message is included)."""


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    certificate: Path
    key: Path


def issue_device_certificate(
    sensor_id: str, ca_cert: Path, ca_key: Path, out_dir: Path, days: int = 825
) -> DeviceCertificate:
    """A new key (ECDSA P-256) and a certificate with CN = ``sensor_id``, signed by the CA.

    The key is written readable by its owner only; the certificate is public.
    """
    if not is_sensor_id(sensor_id):
        raise CertificateError(f"invalid sensor id {sensor_id!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    key, crt = out_dir / f"{sensor_id}.key", out_dir / f"{sensor_id}.crt"
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "device.csr", Path(tmp) / "device.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/O=Nakhon device/CN={sensor_id}",
        )  # fmt: skip
        key.chmod(0o600)
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-set_serial", str(secrets.randbits(127)), "-days", str(days),
            "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip
    return DeviceCertificate(crt, key)


def _openssl(*args: str) -> None:
    done = subprocess.run(  # noqa: S603  (fixed program, arguments we built)
        [OPENSSL, *args], capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")
