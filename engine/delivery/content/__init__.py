"""Building messages: templates, MIME, tracking tokens and the one compose path."""
