"""Talking IMAP in: reading replies and bounces from mailboxes."""
