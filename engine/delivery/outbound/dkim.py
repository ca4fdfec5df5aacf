"""DKIM keys and signatures: every email of a sender with a key carries a ``DKIM-Signature``.

Receivers (Gmail and Yahoo since 2024) expect bulk mail to be authenticated, and RFC 8058 honours a
one-click ``List-Unsubscribe-Post`` only when a DKIM signature covers it. This module holds the
pure parts; the service encrypts the private key at rest with the vault and decrypts it only to
build a :class:`DkimSigning` for :func:`engine.delivery.content.compose.compose_email`.

- Keys: :func:`generate_private_key` makes RSA 2048 (``cryptography``) or Ed25519 (RFC 8463);
  :func:`load_private_key` checks an imported PEM (a private key, not encrypted, RSA of 1024 to
  4096 bits as RFC 8301 lets verifiers accept, or Ed25519) and raises :class:`DkimKeyError` with a
  sentence a user can act on.
- The record to publish: :func:`public_key_value` (the ``p=`` value) and :func:`txt_value`
  (``v=DKIM1; k=rsa; p=...``), at :func:`record_name` (``<selector>._domainkey.<domain>``).
- :func:`sign`: the message with its ``DKIM-Signature`` prepended, made by dkimpy.

Signatures use ``relaxed/relaxed`` canonicalisation: relays re-fold headers and trim trailing
spaces, which breaks a ``simple`` body or header hash without anything meaningful changing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Literal, cast

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils

__all__ = [
    "ALGORITHMS",
    "SIGNED_HEADERS",
    "Algorithm",
    "DkimKeyError",
    "DkimSigning",
    "algorithm_of",
    "check_selector",
    "generate_private_key",
    "load_private_key",
    "public_key_value",
    "record_name",
    "sign",
    "signing_for",
    "txt_value",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("rsa-sha256", "ed25519-sha256")
#: The headers a signature covers, when present: what a receiver shows or acts on (RFC 6376
#: section 5.4.1 names From as the one that must be signed; RFC 8058 section 4 wants both
#: List-Unsubscribe headers covered for one-click unsubscribes to be honoured).
SIGNED_HEADERS: Final = ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post")
RSA_BITS: Final = 2048
MIN_RSA_BITS: Final = 1024  # RFC 8301: verifiers refuse shorter keys
MAX_RSA_BITS: Final = 4096  # RFC 8301: verifiers need not accept longer ones
MAX_PEM_CHARS: Final = 20_000
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class DkimKeyError(ValueError):
    """A key or selector the engine cannot sign with; the message says what to change."""


@dataclass(frozen=True, slots=True)
class DkimSigning:
    """What signing one sender's emails needs: the decrypted key lives only in this value.

    ``domain`` is the ``d=`` of the signature, the sender's own domain, so that the signature
    aligns with the From address for DMARC. The key never shows in a repr or a log line.
    """

    selector: str
    domain: str
    algorithm: Algorithm
    private_key_pem: str = field(repr=False)


def signing_for(sender: Mapping[str, Any], decrypt: Callable[[str], str]) -> DkimSigning | None:
    """How to sign the emails of a sender row (``email`` and its ``dkim`` JSON), or ``None`` without a key.

    ``decrypt`` is the vault's ``decrypt_secret``: the key is decrypted here, at the edge, for one
    compose. That costs microseconds (AES-GCM); the expensive part, reading the PEM, is cached
    per key by :func:`sign`, so no decrypted key needs to be kept per sender.
    """
    stored = sender.get("dkim")
    if not stored:
        return None
    data = json.loads(stored) if isinstance(stored, str | bytes) else stored
    return DkimSigning(selector=str(data["selector"]), domain=str(sender["email"]).rsplit("@", 1)[1],
                       algorithm=cast(Algorithm, data["algorithm"]),
                       private_key_pem=decrypt(str(data["private_key_enc"])))


def check_selector(selector: str) -> str:
    """The selector, lower-cased, when it is one or more DNS labels; else :class:`DkimKeyError`."""
    value = selector.strip().lower() if isinstance(selector, str) else ""
    labels = value.split(".")
    if not value or len(value) > 200 or not all(_LABEL.match(label) for label in labels):
        raise DkimKeyError("selector must be DNS labels of letters, digits and hyphens (e.g. ce2026)")
    return value


def generate_private_key(algorithm: Algorithm) -> str:
    """A new private key as PKCS#8 PEM: RSA 2048 (what every receiver verifies) or Ed25519."""
    key: PrivateKey
    if algorithm == "rsa-sha256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimKeyError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def algorithm_of(key: PrivateKey) -> Algorithm:
    """The signature algorithm a key signs with."""
    return "rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519-sha256"


def load_private_key(pem: str, algorithm: Algorithm | None = None) -> tuple[Algorithm, str]:
    """Check an imported key: ``(its algorithm, the key as PKCS#8 PEM)``, or :class:`DkimKeyError`.

    Any PEM private key form is accepted (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8); it is stored
    normalised to PKCS#8. ``algorithm``, when given, must match the key.
    """
    if not isinstance(pem, str) or not pem.strip():
        raise DkimKeyError("private_key_pem must be a PEM private key")
    if len(pem) > MAX_PEM_CHARS:
        raise DkimKeyError("private_key_pem is too long for a DKIM key")
    text = pem.strip().replace("\r\n", "\n")
    if "PUBLIC KEY" in text:
        raise DkimKeyError("private_key_pem holds a public key: give the private key")
    if "ENCRYPTED" in text or "Proc-Type: 4,ENCRYPTED" in text:
        raise DkimKeyError("private_key_pem is encrypted: give it without a passphrase (it is encrypted at rest)")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii", "replace"), password=None)
    except TypeError as exc:  # a passphrase is needed
        raise DkimKeyError("private_key_pem is encrypted: give it without a passphrase") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimKeyError("private_key_pem is not a readable PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise DkimKeyError(f"an RSA key must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits (2048 recommended); "
                               f"this one has {key.key_size}")
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimKeyError("DKIM signs with RSA or Ed25519 keys only")
    found = algorithm_of(key)
    if algorithm is not None and algorithm != found:
        raise DkimKeyError(f"the key is for {found}, not {algorithm}")
    normalised = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()).decode("ascii")
    return found, normalised


def _load(pem: str) -> PrivateKey:
    return cast(PrivateKey, serialization.load_pem_private_key(pem.encode("ascii"), password=None))


def public_key_value(private_key_pem: str) -> str:
    """The ``p=`` value: base64 of the SubjectPublicKeyInfo (RSA) or of the raw 32 bytes (Ed25519)."""
    key = _load(private_key_pem)
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def txt_value(algorithm: Algorithm, public_key: str) -> str:
    """The TXT record to publish: ``v=DKIM1; k=rsa|ed25519; p=<base64>``.

    An RSA 2048 value is longer than one 255-byte DNS string: DNS providers split it into several
    strings of one record, which receivers join (RFC 6376 section 3.6.2.2).
    """
    kind = "rsa" if algorithm == "rsa-sha256" else "ed25519"
    return f"v=DKIM1; k={kind}; p={public_key}"


def record_name(selector: str, domain: str) -> str:
    """The DNS name of the key record: ``<selector>._domainkey.<domain>``."""
    return f"{selector}._domainkey.{domain.strip().rstrip('.').lower()}"


@lru_cache(maxsize=256)
def _dkimpy_key(private_key_pem: str) -> bytes:
    """The key in the form dkimpy reads: PKCS#1 PEM for RSA, base64 of the 32-byte seed for Ed25519.

    Cached per key so that a tick of many emails from one sender converts it once.
    """
    key = _load(private_key_pem)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return base64.b64encode(seed)


def _present_headers(raw: bytes) -> list[bytes]:
    """The names in :data:`SIGNED_HEADERS` that the message's header block carries."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    present = {match.group(1).lower() for match in _HEADER_NAME.finditer(head)}
    return [name.encode() for name in SIGNED_HEADERS if name.lower().encode() in present]


def sign(raw: bytes, *, selector: str, domain: str, private_key_pem: str, algorithm: Algorithm) -> bytes:
    """``raw`` with a ``DKIM-Signature`` header in front, over :data:`SIGNED_HEADERS` present and the body.

    ``domain`` is the signing domain (``d=``); the signature verifies against
    ``txt_value(algorithm, public_key_value(private_key_pem))`` published at
    ``record_name(selector, domain)``. ValueError when the message has no From header.
    """
    headers = _present_headers(raw)
    if b"From" not in headers:
        raise ValueError("a message without a From header cannot be DKIM-signed")
    ascii_domain = domain.strip().rstrip(".").lower()
    if not ascii_domain.isascii():
        ascii_domain = ascii_domain.encode("idna").decode("ascii")
    options: dict[str, Any] = {"canonicalize": (b"relaxed", b"relaxed"), "include_headers": headers}
    if algorithm == "rsa-sha256":
        signer: dkim.DKIM = _OpenSslRsaDkim(raw, _rsa_key(private_key_pem))
    else:
        signer = dkim.DKIM(raw, signature_algorithm=algorithm.encode("ascii"), linesep=b"\r\n")
    signature = signer.sign(selector.encode("ascii"), ascii_domain.encode("ascii"), _dkimpy_key(private_key_pem),
                            **options)
    return bytes(signature) + raw


@lru_cache(maxsize=256)
def _rsa_key(private_key_pem: str) -> rsa.RSAPrivateKey:
    key = _load(private_key_pem)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError("the key is for ed25519-sha256, not rsa-sha256")
    return key


@dataclass(frozen=True, slots=True)
class _Signature:
    signature: bytes


@dataclass(frozen=True, slots=True)
class _DigestSigner:
    """An RSA key in the shape dkimpy hands a digest to: ``sign(digest).signature``."""

    key: rsa.RSAPrivateKey

    def sign(self, digest: bytes) -> _Signature:
        return _Signature(self.key.sign(digest, padding.PKCS1v15(), asym_utils.Prehashed(hashes.SHA256())))


class _OpenSslRsaDkim(dkim.DKIM):  # type: ignore[misc]  # dkimpy ships no type hints
    """dkimpy's signer (headers, canonicalisation, tags, folding), with the RSA step done by OpenSSL.

    dkimpy computes RSA signatures with its own pure-Python arithmetic: about 6 ms per email on
    an idle core, which would cap a sender with an RSA key (what every receiver verifies) near 150
    emails a second and stall the event loop meanwhile. OpenSSL, through ``cryptography``, makes
    the same signature (PKCS#1 v1.5 is deterministic: same key and digest, same bytes) about 20
    times faster. dkimpy hands keys other than its own RSA ones the SHA-256 digest of the signed
    headers (its ed25519 path); this signer takes that path with an RSA key, while the tags, written
    before, keep saying ``a=rsa-sha256``.
    """

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey) -> None:
        super().__init__(message, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
        self._digest_signer = _DigestSigner(key)

    def gen_header(self, fields: Any, include_headers: Any, canon_policy: Any, header_name: bytes, pk: Any,
                   standardize: bool = False) -> bytes:
        self.signature_algorithm = b"ed25519-sha256"  # the same SHA-256 digest, signed by our key
        try:
            return bytes(super().gen_header(fields, include_headers, canon_policy, header_name, self._digest_signer,
                                            standardize))
        finally:
            self.signature_algorithm = b"rsa-sha256"
