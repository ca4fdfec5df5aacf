"""The bounce classifier: reads an inbound message and says what it is (reply, auto-reply, bounce,
delay notice, complaint). ``classify_message`` is its one entry point; the modules beside it are its
internals (RFC 3464 fields, RFC 3463 status codes, MTA and provider wordings) and are not imported
from outside this package. ``refusal_type`` types a refusal met during the SMTP dialogue by the same
status rule the classifier types a DSN's, so the engine has one."""

from engine.delivery.bounces.classify import BounceEntry, Classification, classify_message
from engine.delivery.bounces.reason import refusal_type

__all__ = ["BounceEntry", "Classification", "classify_message", "refusal_type"]
