"""Talking DNS: MX checks for recipients and the address checks behind webhook destinations."""
