"""The interface driver: a namespace per network, plugged into its bridge.

    bridge <name> ── vdh<id> ═══ veth ═══ vdn<id> [netns qdhcp-<quantumId>]
                                           MAC and IPs of the DHCP port

A driver has plug(quantum_id, InterfacePlan), unplug(quantum_id), ours()
and remove(namespace, host_if). This module holds what every driver and
every program shares (options, names); the veth driver itself (pyroute2)
is loaded only by the agent, so that the CLI and the hooks start fast.
"""
import importlib

from oslo_config import cfg

NS_PREFIX = 'qdhcp-'
HOST_PREFIX = 'vdh'
NS_IF_PREFIX = 'vdn'

DRIVERS = {'veth': 'vdsm_dhcp.veth:VethDriver'}

interface_opts = [
    cfg.StrOpt('driver', default='veth', choices=sorted(DRIVERS),
               help='How the DHCP namespace is plugged into the bridge.'),
]


class PlugError(Exception):
    pass


def device_names(quantum_id):
    """(host end, namespace end): prefix + 11 hex digits of the id = 14
    characters, within IFNAMSIZ-1 like Neutron's tap devices."""
    short = quantum_id.replace('-', '')[:11]
    return HOST_PREFIX + short, NS_IF_PREFIX + short


def load_driver(conf):
    module, _, cls = DRIVERS[conf.interface.driver].partition(':')
    return getattr(importlib.import_module(module), cls)()
