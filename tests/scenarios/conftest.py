"""Scenario fixtures: ``eng`` (an engine with a public tracking URL) and ``sink`` (a recording SMTP
server) come from tests/conftest.py, shared with the API and security tests."""
