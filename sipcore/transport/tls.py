# -*- test-case-name: tests.test_reload -*-
"""
The TLS settings of a TLS or WSS listener, read from its files and read
again on reload.

L{ReloadableTLS} is the listener's context factory: every new connection
asks it for a context, and gets the one built from the files as they were
at the last successful L{ReloadableTLS.reload}; connections already open
keep theirs.  A reload that finds a file missing, unreadable or not
matching (a key that is not the certificate's) keeps the previous
certificate and key.
"""

from __future__ import annotations

import re

from OpenSSL import SSL, crypto
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    DiffieHellmanParameters,
    PrivateCertificate,
)
from twisted.python.filepath import FilePath
from zope.interface import implementer

__all__ = ["ReloadableTLS"]

_PEM_CERTIFICATE = re.compile(
    b"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """
    A context factory for a TLS listener whose certificate and key can be
    read again.

    @ivar subject: the common name (or the whole subject) of the
        certificate in use, for the log.
    """

    def __init__(self, privateKey: str, certKey: str | None = None,
                 extraCertChain: str | None = None, dhParameters: str | None = None) -> None:
        """
        @param privateKey: the PEM file of the private key (and the
            certificate unless C{certKey} is given).
        @param certKey: the PEM file of the certificate.
        @param extraCertChain: a PEM file of intermediate certificates.
        @param dhParameters: a file of Diffie-Hellman parameters.
        @raise ValueError: a file is unreadable or they do not match.
        """
        self._paths = (privateKey, certKey or privateKey, extraCertChain, dhParameters)
        self.subject = ""
        self._options = self._load()

    def _load(self) -> CertificateOptions:
        keyPath, certPath, chainPath, dhPath = self._paths
        try:
            keyPEM = _read(keyPath)
            certPEM = _read(certPath)
            chain = [Certificate.loadPEM(block).original for block in
                     _PEM_CERTIFICATE.findall(_read(chainPath))] if chainPath else None
            private = PrivateCertificate.loadPEM(certPEM + b"\n" + keyPEM)
            options = CertificateOptions(
                privateKey=private.privateKey.original, certificate=private.original,
                extraCertChain=chain,
                dhParameters=(DiffieHellmanParameters.fromFile(FilePath(dhPath))
                              if dhPath else None))
            options.getContext()
        except OSError as e:
            raise ValueError("cannot read {}: {}".format(
                e.filename, e.strerror or type(e).__name__)) from None
        except (SSL.Error, crypto.Error, VerifyError, ValueError) as e:
            raise ValueError("unusable certificate or key in {}: {}".format(
                certPath, e or type(e).__name__)) from None
        subject = private.getSubject()
        self.subject = str(subject.commonName.decode("utf-8", "replace")
                           if subject.commonName else subject)
        return options

    def reload(self) -> str:
        """
        Read the files again; new connections use what was read.

        @return: the subject of the certificate now in use.
        @raise ValueError: as the constructor; the previous certificate
            and key stay in use.
        """
        self._options = self._load()
        return self.subject

    def getContext(self) -> SSL.Context:
        """
        The context of the certificate and key read last.
        """
        return self._options.getContext()
