"""The interface driver: a namespace per network, plugged into its bridge.

    bridge <name> ── vdh<id> ═══ veth ═══ vdn<id> [netns qdhcp-<quantumId>]
                                           MAC and IPs of the DHCP port

A driver has plug(quantum_id, InterfacePlan), unplug(quantum_id), ours()
and remove(namespace, host_if). What a driver creates carries our mark,
and ours() returns only what does: a host may also run Neutron's own DHCP
agent, whose qdhcp-* namespaces are not ours to remove. This module holds
what every driver and every program shares (options, names); the veth
driver itself (pyroute2) is loaded only by the agent, so that the CLI and
the hooks start fast.
"""
import importlib
import os

from vdsm_dhcp.errors import VdsmDhcpError
from vdsm_dhcp.model import NS_PREFIX  # noqa: F401  (named there)
from vdsm_dhcp.options import INTERFACE_DRIVERS

HOST_PREFIX = 'vdh'
NS_IF_PREFIX = 'vdn'
# ifalias of the host veth ends we create, followed by the network id
DEVICE_MARK = 'vdsm-dhcp:'


class PlugError(VdsmDhcpError):
    """A namespace or veth could not be set up."""


def device_names(quantum_id):
    """(host end, namespace end): prefix + 11 hex digits of the id = 14
    characters, within IFNAMSIZ-1 like Neutron's tap devices."""
    short = quantum_id.replace('-', '')[:11]
    return HOST_PREFIX + short, NS_IF_PREFIX + short


def mark_dir(conf):
    """Where a driver marks the namespaces it created (one empty file per
    namespace; a namespace itself cannot carry a label)."""
    return os.path.join(conf.state_dir, '.netns')


def load_driver(conf):
    module, _, cls = INTERFACE_DRIVERS[conf.interface.driver].partition(':')
    return getattr(importlib.import_module(module), cls)(mark_dir(conf))
