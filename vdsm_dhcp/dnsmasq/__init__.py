"""Everything that knows dnsmasq: its language (conf, pure), its process,
and when it has really loaded an entry (readiness)."""
