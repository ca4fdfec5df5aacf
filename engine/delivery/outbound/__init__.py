"""Talking SMTP out: the pooled aiosmtplib mailer and DKIM signing."""
