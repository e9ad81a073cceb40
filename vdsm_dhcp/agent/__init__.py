"""The agent (vdsm-dhcp-agent): the event loop, the per-network runtime,
the pure planner, the control socket and what it answers. See
docs/architecture.md."""
