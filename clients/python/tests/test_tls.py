"""TLS and mutual TLS against a stub that requires a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

from conftest import MakeDriver
from mandate_client import Client, TransportError
from stubs import ALLOW, Stub, response

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

ARGS = ({"type": "user", "id": "carol"}, "place_order", {"type": "account", "id": "a"})


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Optional[Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Optional[ec.EllipticCurvePrivateKey]) -> None:
    data = cert.public_bytes(serialization.Encoding.PEM)
    path.with_suffix(".crt").write_bytes(data)
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Test CA", ca_key, None, ca=True)
    _write(d / "ca", ca, None)
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(d / name, _cert(f"{name}.test", key, (ca, ca_key), server=server), key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _cert("Other CA", other_key, None, ca=True)
    _write(d / "other-ca", other_ca, None)
    return {
        "ca": d / "ca.crt",
        "other_ca": d / "other-ca.crt",
        "server_cert": d / "server.crt",
        "server_key": d / "server.key",
        "client_cert": d / "client.crt",
        "client_key": d / "client.key",
    }


@pytest.fixture
def mtls_stub(pki: Dict[str, Path]) -> Iterator[Stub]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    ctx.load_cert_chain(str(pki["server_cert"]), str(pki["server_key"]))
    ctx.verify_mode = ssl.CERT_REQUIRED
    with Stub(lambda req: response(200, ALLOW), tls=ctx) as stub:
        yield stub


def test_mutual_tls(mtls_stub: Stub, pki: Dict[str, Path], make: MakeDriver) -> None:
    client = make(
        mtls_stub.url,
        ca_file=pki["ca"],
        cert_file=pki["client_cert"],
        key_file=pki["client_key"],
        token="t",
    )
    assert client.allowed(*ARGS) is True
    assert client.evaluate(*ARGS).reasons == ["stub"]
    req = mtls_stub.requests[-1]
    assert req.peer_cert is not None
    assert ("commonName", "client.test") in [kv for rdn in req.peer_cert["subject"] for kv in rdn]
    assert mtls_stub.connections == 1, "the TLS connection is reused"
    assert client.failures == 0


def test_without_a_client_certificate_the_server_refuses(
    mtls_stub: Stub, pki: Dict[str, Path], make: MakeDriver
) -> None:
    client = make(mtls_stub.url, ca_file=pki["ca"])
    assert client.allowed(*ARGS) is False
    with pytest.raises(TransportError) as info:
        client.evaluate(*ARGS)
    assert not info.value.refused
    assert client.retries == 0
    assert mtls_stub.requests == []


@pytest.mark.parametrize("ca", ["other_ca", None], ids=["another CA", "system roots"])
def test_a_server_the_ca_does_not_vouch_for_is_refused(
    ca: Optional[str], mtls_stub: Stub, pki: Dict[str, Path], make: MakeDriver
) -> None:
    client = make(
        mtls_stub.url,
        ca_file=pki[ca] if ca else None,
        cert_file=pki["client_cert"],
        key_file=pki["client_key"],
    )
    assert client.allowed(*ARGS) is False
    with pytest.raises(TransportError, match=r"(?i)certificate"):
        client.evaluate(*ARGS)
    assert client.retries == 0
    assert mtls_stub.requests == []


def test_tls_settings_need_https(pki: Dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="https"):
        Client("http://127.0.0.1:8180", ca_file=pki["ca"])
