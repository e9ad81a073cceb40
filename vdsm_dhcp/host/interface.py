"""The interface driver: a namespace per network, plugged into its bridge.

    bridge <name> ── vdh<id> ═══ veth ═══ vdn<id> [netns qdhcp-<quantumId>]
                                           MAC and IPs of the DHCP port

A driver has plug(unit, InterfacePlan), unplug(unit), ours(), close()
and remove(namespace, host_if). What a driver creates carries our mark,
and ours() returns only what does: a host may also run Neutron's own DHCP
agent, whose qdhcp-* namespaces are not ours to remove. This module holds
what every driver and every program shares (options, names); the veth
driver itself (pyroute2) is loaded only by the agent, so that the CLI and
the hooks start fast.
"""
import hashlib
import importlib
import os

from vdsm_dhcp.errors import VdsmDhcpError
from vdsm_dhcp.model import NS_PREFIX  # noqa: F401  (named there)
from vdsm_dhcp.model import UNIT_SEP
from vdsm_dhcp.options import INTERFACE_DRIVERS

HOST_PREFIX = 'vdh'
NS_IF_PREFIX = 'vdn'
# ifalias of the host veth ends we create, followed by the network id
DEVICE_MARK = 'vdsm-dhcp:'


class PlugError(VdsmDhcpError):
    """A namespace or veth could not be set up."""


def device_names(unit):
    """(host end, namespace end) of a network's (or shard's) veth: prefix
    + 11 characters = 14, within IFNAMSIZ-1 like Neutron's tap devices.
    A network: 11 hex digits of its quantumId. A further shard of a big
    network ("<quantumId>.<DHCP port id>", see model.unit_id): 11 hex
    digits of a hash of that id (port ids are any IPAM's: their prefixes
    may be alike)."""
    if UNIT_SEP in unit:
        short = hashlib.blake2b(unit.encode(), digest_size=6).hexdigest()
    else:
        short = unit.replace('-', '')
    return HOST_PREFIX + short[:11], NS_IF_PREFIX + short[:11]


def mark_dir(conf):
    """Where a driver marks the namespaces it created (one empty file per
    namespace; a namespace itself cannot carry a label)."""
    return os.path.join(conf.state_dir, '.netns')


def load_driver(conf):
    module, _, cls = INTERFACE_DRIVERS[conf.interface.driver].partition(':')
    return getattr(importlib.import_module(module), cls)(mark_dir(conf))
