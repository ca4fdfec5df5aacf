"""Real servers for delivery tests: a loopback DNS server and a Dovecot IMAP server.

Both are function-scoped so every test starts from a known state; the scenario tests can build
their own (any scope) from ``tests.delivery.dns_server`` and ``tests.delivery.dovecot``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.delivery.dns_server import DEFAULT_RECORDS, DEFAULT_SERVFAIL, DEFAULT_SILENT, DnsServer
from tests.delivery.dovecot import Dovecot, DovecotUnavailable


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A DNS server for the default zone (see ``dns_server.DEFAULT_RECORDS``) on a free port."""
    with DnsServer(DEFAULT_RECORDS, servfail=DEFAULT_SERVFAIL, silent=DEFAULT_SILENT) as server:
        yield server


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot (plain IMAP, no users yet) on a free port; add users with ``add_user``."""
    try:
        server = Dovecot()
    except DovecotUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server
