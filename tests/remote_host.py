"""A second "host" for multi-host tests, run as

    unshare --net --mount --propagation private -- \\
        .venv/bin/python -m tests.remote_host --config-file CONF \\
            --bridge red --uplink uplinkb --ready FILE

It makes this process a host of its own (its own /sys and /run/netns, lo
up), creates the bridge, writes FILE, waits for the uplink (the test moves
one end of a veth pair into this network namespace, by this process's PID)
and enslaves it to the bridge, then execs vdsm-dhcp-agent: the agent keeps
this PID, so the test signals it directly.

With --cleanup it only makes the same private host (empty: no namespaces,
no devices of ours) and execs `vdsm-dhcp-agent --cleanup`, which stops the
dnsmasq processes left under the config's state dir, by their pid files,
and removes their state, without touching the test's own host.
"""
import argparse
import os
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)


def private_host():
    for argv in (['mount', '--make-rprivate', '/'],
                 ['mount', '-t', 'sysfs', 'sysfs', '/sys'],
                 ['mkdir', '-p', '/run/netns'],
                 ['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs',
                  '/run/netns']):
        subprocess.run(argv, check=True)
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link('set', index=ipr.link_lookup(ifname='lo')[0], state='up')


def plumb(bridge, uplink, ready, timeout):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link('add', ifname=bridge, kind='bridge')
        br = ipr.link_lookup(ifname=bridge)[0]
        ipr.link('set', index=br, state='up')
        with open(ready + '.tmp', 'w') as f:
            f.write('%d\n' % os.getpid())
        os.rename(ready + '.tmp', ready)
        deadline = time.monotonic() + timeout
        while not ipr.link_lookup(ifname=uplink):
            if time.monotonic() > deadline:
                sys.exit('remote_host: no %s after %ss' % (uplink, timeout))
            time.sleep(0.01)
        ipr.link('set', index=ipr.link_lookup(ifname=uplink)[0], master=br,
                 state='up')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--config-file', required=True)
    parser.add_argument('--bridge', default='red')
    parser.add_argument('--uplink', default='uplinkb')
    parser.add_argument('--ready')
    parser.add_argument('--timeout', type=float, default=60.0)
    parser.add_argument('--cleanup', action='store_true')
    args = parser.parse_args()
    parent = '/proc/%d/ns/net' % os.getppid()
    if os.readlink('/proc/self/ns/net') == os.readlink(parent):
        sys.exit('remote_host: run me under unshare --net --mount')
    private_host()
    agent = [os.path.join(BIN, 'vdsm-dhcp-agent'), '--config-file',
             args.config_file]
    if args.cleanup:
        agent.append('--cleanup')
    else:
        plumb(args.bridge, args.uplink, args.ready, args.timeout)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(agent[0], agent)


if __name__ == '__main__':
    main()
