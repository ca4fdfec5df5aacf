"""DKIM keys and signatures, verified by dkimpy against keys served by the real loopback DNS server."""

from __future__ import annotations

import base64
import email
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import dkim as dkimpy
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.delivery.content import mime
from engine.delivery.content.compose import compose_email
from engine.delivery.outbound import dkim
from tests.delivery.dns_server import DnsServer

DOMAIN = "acme.test"
SECRET = b"k" * 32
DEFINITION = {"steps": [{"subject": "Hello {{first_name}}", "body_html": "<p>Hi {{first_name}}</p>"}]}
CONTACT = {"first_name": "Ana", "last_name": "Lima", "email": "ana@corp.test", "company": "Corp"}
SENDER = {"email": f"sales@{DOMAIN}", "from_name": "Sales"}
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# A 512-bit RSA key, made by openssl for this test only (cryptography refuses to generate one).
WEAK_RSA_PEM = """\
-----BEGIN PRIVATE KEY-----
MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEArKCPDPhEsv/qW1QK
47sMW2LJwil40pbnHLn7YwOPF912r9MDieOBBRk1ubYbiQyXXxQ3nLeAcOlC+11Q
zZFbrQIDAQABAkEAgg+iV9JB6F9aUh766WOHRt8iRdB7QKcDT6hsV8hZqk8q0L6n
72awp7MOZ/Vz/sG7Q8rMuQkqiZJ4hc0b78qbXQIhAOFRylE/Mfp8LBxBjD2e7Zzy
JDYmelsqXM5om8MKdbOfAiEAxCIDvIfzkmUstsfLZ1d14I/hovKM8v3TAHEmwi3Q
jTMCIB9SFUOR+0qMdD1BR1NRgkosxqfYVW3Sx6/RjsVf8NiVAiEAtRFN78R2+kUL
Vab3wmz89xb90Ogpdb8dCABuLsALE/8CIQCZqJi/yiaX/OgVbdH/Y6dhZpEweuht
ROfZZ3IfHs8QAQ==
-----END PRIVATE KEY-----
"""


def txt_strings(value: str) -> str:
    """The record in zone-file form: one TXT record of 255-byte strings (an RSA 2048 key needs two)."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


def publish(server: DnsServer, selector: str, algorithm: dkim.Algorithm, pem: str) -> None:
    value = dkim.txt_value(algorithm, dkim.public_key_value(pem))
    server.set_records(dkim.record_name(selector, DOMAIN), {"TXT": [txt_strings(value)]})


def dns_lookup(server: DnsServer) -> Callable[..., bytes]:
    """dkimpy's ``dnsfunc``: the TXT record through dnspython, asking the loopback server only."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        return b"".join(b"".join(record.strings) for record in answer)

    return lookup


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer({}) as server:
        yield server


def composed(signing: dkim.DkimSigning | None, public_url: str = "https://t.example.test") -> bytes:
    tracking = mime.Tracking(public_url=public_url, secret=SECRET, email_id="enr_1.1", unsubscribe=True,
                             workspace_id="ws_1", contact_id="con_1")
    return compose_email(DEFINITION, 1, CONTACT, SENDER, enrollment_id="enr_1", email_id="enr_1.1",
                         message_id=f"<enr_1.1@{DOMAIN}>", now=NOW, tracking=tracking, dkim=signing).raw


@pytest.mark.parametrize("algorithm", dkim.ALGORITHMS)
def test_a_composed_email_verifies_against_the_published_key(dns_server: DnsServer,
                                                              algorithm: dkim.Algorithm) -> None:
    pem = dkim.generate_private_key(algorithm)
    publish(dns_server, "ce1", algorithm, pem)
    raw = composed(dkim.DkimSigning(selector="ce1", domain=DOMAIN, algorithm=algorithm, private_key_pem=pem))
    assert raw.startswith(b"DKIM-Signature:")
    assert dkimpy.verify(raw, dnsfunc=dns_lookup(dns_server))
    assert dns_server.count(f"ce1._domainkey.{DOMAIN}", "TXT") >= 1  # really asked the server
    signature = email.message_from_bytes(raw)["DKIM-Signature"]
    tags = dict(part.strip().split("=", 1) for part in " ".join(signature.split()).split(";") if "=" in part)
    assert tags["a"] == algorithm and tags["d"] == DOMAIN and tags["s"] == "ce1" and tags["c"] == "relaxed/relaxed"
    signed = [name.strip() for name in tags["h"].split(":")]
    assert signed == ["from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"]
    # A changed subject or body no longer verifies.
    assert not dkimpy.verify(raw.replace(b"Subject: Hello Ana", b"Subject: Hello Bob"), dnsfunc=dns_lookup(dns_server))
    assert not dkimpy.verify(raw.replace(b"Hi Ana", b"Hi Bob"), dnsfunc=dns_lookup(dns_server))


def test_another_key_at_the_selector_fails(dns_server: DnsServer) -> None:
    publish(dns_server, "ce1", "ed25519-sha256", dkim.generate_private_key("ed25519-sha256"))
    pem = dkim.generate_private_key("ed25519-sha256")
    raw = composed(dkim.DkimSigning(selector="ce1", domain=DOMAIN, algorithm="ed25519-sha256", private_key_pem=pem))
    assert not dkimpy.verify(raw, dnsfunc=dns_lookup(dns_server))


def test_without_a_key_nothing_is_signed() -> None:
    assert b"DKIM-Signature" not in composed(None)


def test_records_and_row_signing() -> None:
    pem = dkim.generate_private_key("ed25519-sha256")
    public = dkim.public_key_value(pem)
    assert len(base64.b64decode(public)) == 32  # RFC 8463: the raw key
    assert dkim.txt_value("ed25519-sha256", public) == f"v=DKIM1; k=ed25519; p={public}"
    rsa_pem = dkim.generate_private_key("rsa-sha256")
    assert dkim.txt_value("rsa-sha256", dkim.public_key_value(rsa_pem)).startswith("v=DKIM1; k=rsa; p=MII")
    assert dkim.record_name("ce1", "Acme.Test.") == "ce1._domainkey.acme.test"
    row = {"email": "a@acme.test", "dkim": '{"selector": "s1", "algorithm": "ed25519-sha256", "public_key": "x", '
                                           '"private_key_enc": "enc:abc"}'}
    signing = dkim.signing_for(row, lambda token: pem if token == "enc:abc" else "")
    assert signing == dkim.DkimSigning(selector="s1", domain="acme.test", algorithm="ed25519-sha256",
                                       private_key_pem=pem)
    assert pem not in repr(signing)
    assert dkim.signing_for({"email": "a@acme.test", "dkim": None}, lambda token: "") is None


def test_import_accepts_pkcs1_and_refuses_what_cannot_sign() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode()
    algorithm, stored = dkim.load_private_key(pkcs1)
    assert algorithm == "rsa-sha256" and stored.startswith("-----BEGIN PRIVATE KEY-----")
    assert dkim.public_key_value(stored) == dkim.public_key_value(pkcs1)
    with pytest.raises(dkim.DkimKeyError, match="not rsa-sha256"):
        dkim.load_private_key(dkim.generate_private_key("ed25519-sha256"), "rsa-sha256")
    with pytest.raises(dkim.DkimKeyError, match="public key"):
        dkim.load_private_key(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    with pytest.raises(dkim.DkimKeyError, match="1024 to 4096 bits"):
        dkim.load_private_key(WEAK_RSA_PEM)
    with pytest.raises(dkim.DkimKeyError, match="encrypted"):
        dkim.load_private_key(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"pw")).decode())
    with pytest.raises(dkim.DkimKeyError, match="RSA or Ed25519"):
        dkim.load_private_key(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    with pytest.raises(dkim.DkimKeyError, match="not a readable PEM"):
        dkim.load_private_key("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(dkim.DkimKeyError, match="selector"):
        dkim.check_selector("bad selector!")
    assert dkim.check_selector("CE2026.eu") == "ce2026.eu"


def test_one_click_is_offered_only_over_https() -> None:
    """RFC 8058 section 3.1: List-Unsubscribe-Post needs an https URL; both channels stay listed."""
    secure = email.message_from_bytes(composed(None, "https://t.example.test"))
    assert secure["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = email.message_from_bytes(composed(None, "http://t.example.test"))
    assert plain["List-Unsubscribe-Post"] is None
    header = " ".join(plain["List-Unsubscribe"].split())
    assert "<http://t.example.test/u/" in header and f"<mailto:sales@{DOMAIN}?subject=unsubscribe" in header


def test_rsa_signatures_are_made_by_openssl_and_equal_dkimpys_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an RSA key and a composed email, and one signing time for both signers (t= is dkimpy's clock)
    monkeypatch.setattr(dkimpy.time, "time", lambda: 1767600000.0)
    pem = dkim.generate_private_key("rsa-sha256")
    raw = composed(None)
    # When dkimpy signs it alone with its pure-Python RSA, and then the engine signs it with that
    # arithmetic made unavailable
    pkcs1 = serialization.load_pem_private_key(pem.encode(), password=None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    theirs = dkimpy.sign(raw, b"ce1", DOMAIN.encode(), pkcs1, canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Unsubscribe",
                                          b"List-Unsubscribe-Post"], linesep=b"\r\n") + raw

    def pure_python_rsa(*_args: object) -> bytes:
        raise AssertionError("the engine must not sign with dkimpy's pure-Python RSA")

    monkeypatch.setattr(dkimpy, "RSASSA_PKCS1_v1_5_sign", pure_python_rsa)
    ours = dkim.sign(raw, selector="ce1", domain=DOMAIN, private_key_pem=pem, algorithm="rsa-sha256")
    # Then the bytes are the same (PKCS#1 v1.5 is deterministic): only the arithmetic moved to OpenSSL
    assert ours == theirs
    assert b"a=rsa-sha256" in ours.split(b"\r\n\r\n", 1)[0]
