"""Every option of every module, for oslo-config-generator and config.load."""
import itertools


def list_opts(sample=True):
    """oslo-config-generator's entry point; config.load passes
    sample=False."""
    from vdsm_dhcp import (agent, config, control, dnsmasq, interface,
                           metrics, neutron, source)
    return [
        ('DEFAULT', list(itertools.chain(config.common_opts,
                                         source.source_opts,
                                         agent.agent_opts,
                                         control.control_opts))),
        ('file', list(source.file_opts)),
        ('dnsmasq', list(dnsmasq.dnsmasq_opts)),
        ('interface', list(interface.interface_opts)),
        ('hooks', list(config.hooks_opts)),
        (metrics.GROUP, list(metrics.metrics_opts)),
        (neutron.GROUP, neutron.list_opts(sample)),
    ]
