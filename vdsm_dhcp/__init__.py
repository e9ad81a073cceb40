"""vdsm-dhcp: host-side DHCP for oVirt hosts, addresses owned by
Quantum/Neutron. The layout: docs/architecture.md."""
