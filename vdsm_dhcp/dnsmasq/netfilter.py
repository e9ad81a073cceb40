"""The per-client DHCP rate limit in front of each dnsmasq: an nftables
table in the network's namespace ([dnsmasq] client_rate)."""
import logging
import subprocess

from vdsm_dhcp.host.netns_exec import spawn_in_netns

log = logging.getLogger('vdsm_dhcp.dnsmasq')


# dnsmasq reads one packet per turn of its loop: a flood fills its socket
# queue and the kernel drops the other VMs' packets with the flood's. Each
# source MAC gets a token bucket before the queue (netdev ingress: dropped
# before the IP stack). Applied whole (nft -f is one transaction), again
# at each start of dnsmasq.
CLIENT_LIMIT_RULES = """\
table netdev vdsm_dhcp
delete table netdev vdsm_dhcp
table netdev vdsm_dhcp {
    set clients {
        type ether_addr
        size 65535
        flags dynamic,timeout
        timeout 1m
    }
    chain ingress {
        type filter hook ingress device "%(ifname)s" priority filter;
        meta l4proto udp th dport { 67, 547 } update @clients { ether saddr \
limit rate over %(rate)d/second burst %(burst)d packets } counter drop
    }
}
"""


def limit_clients(conf, namespace, ifname):
    """The per-client rate limit in front of dnsmasq (client_rate). A
    failure is logged: dnsmasq still serves, only unprotected."""
    rate = conf.dnsmasq.client_rate
    rules = CLIENT_LIMIT_RULES % {'ifname': ifname, 'rate': rate,
                                  'burst': max(10, 2 * rate)}
    if not rate:     # none wanted: remove one set before
        rules = ''.join(rules.splitlines(True)[:2])
    try:
        proc = spawn_in_netns(namespace, [conf.dnsmasq.nft, '-f', '-'],
                              stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        try:
            _, stderr = proc.communicate(rules.encode(), timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        error = stderr.decode(errors='replace').strip() \
            if proc.returncode else None
    except (OSError, subprocess.SubprocessError) as e:
        error = str(e)
    if error and rate:
        log.warning('no per-client DHCP rate limit on %s in %s (%s): one VM '
                    'flooding can starve the others', ifname, namespace,
                    error[-300:])
    return not error
