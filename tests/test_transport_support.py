# -*- test-case-name: tests.test_transport_stream -*-
"""
Fakes shared by the transport tests (no tests here): a recording message
sink that answers C{OPTIONS} and a throwaway TLS certificate, and
L{sipcore.testing.RecordingBus} for the tests that import it from here.
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.python.filepath import FilePath
from zope.interface import implementer

from sipcore.interfaces import IMessageSink
from sipcore.testing import RecordingBus

__all__ = ["OK", "OPTIONS", "RecordingBus", "RecordingSink", "makeCertificate"]

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-1\r\n"
    b"Call-ID: 1@test\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK = b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"


@implementer(IMessageSink)
class RecordingSink:
    """
    A message sink that records messages and rejections and answers an
    C{OPTIONS} request with a canned C{200 OK}.
    """

    def __init__(self, answer: bool = True) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.rejected: list[tuple[bytes, str, Any]] = []
        self.answer = answer

    def messageReceived(self, data: bytes, flow: Any) -> None:
        self.received.append((data, flow))
        if self.answer and data.startswith(b"OPTIONS "):
            flow.send(OK)

    def messageRejected(self, data: bytes, reason: str, flow: Any) -> None:
        self.rejected.append((data, reason, flow))


def makeCertificate(directory: FilePath, commonName: str = "localhost") -> tuple[str, str]:
    """
    Write a throwaway self-signed certificate for C{localhost} and
    C{127.0.0.1} (with C{commonName} as its subject), and its key.

    @return: C{(keyPath, certPath)}.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.makedirs(ignoreExistingDirectory=True)
    keyPath = directory.child("key.pem")
    certPath = directory.child("cert.pem")
    keyPath.setContent(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certPath.setContent(cert.public_bytes(serialization.Encoding.PEM))
    return keyPath.path, certPath.path
