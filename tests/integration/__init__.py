"""Tests against real namespaces, dnsmasq, systemd and Neutron (run
through tests/isolated)."""
