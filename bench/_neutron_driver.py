"""Neutron 29's own DHCP driver, driven for the benchmark (figure 1).

Run with the Neutron venv's interpreter (.venv-neutron/bin/python), as
root, inside tests/isolated. It imports nothing of vdsm_dhcp. It speaks
JSON lines on stdin/stdout:

  {"cmd": "init", "state_dir": D, "network": {...}}
      build Neutron's conf (dhcp agent options, root_helper unset: we are
      root; privsep in-process), NetworkCache.put(NetModel(network)), a new
      dhcp.Dnsmasq, its interface file, and spawn_process() (the init lease
      file: a live lease per port; Neutron's command line through
      `ip netns exec qdhcp-<id>`). The namespace and its interface exist
      already (made by the bench). -> {"pid": dnsmasq pid, "log": path,
      "cmdline": [...]}
  {"cmd": "add", "port": {...}} / {"cmd": "remove", "port_id": ID}
      what the agent does on port_create_end / port_delete_end with
      bulk reload off: NetworkCache.put_port / remove_port, then
      call_driver('reload_allocations'): a new dhcp.Dnsmasq and the real
      reload_allocations() (release stale leases, hosts/addn_hosts/opts
      via replace_file, `kill -HUP` through `ip netns exec`,
      device_manager.update()). -> monotonic times {t0, hup, end}
  {"cmd": "stop"}  SIGTERM to dnsmasq (by its pid file), then exit.

The plugin RPC is a stub (nothing of it is called on these paths but
get_networks for the interface driver); the interface driver is Neutron's
NullDriver (the namespace interface is made by the bench, as the real
DeviceManager.setup would have made it)."""
import json
import os
import signal
import sys
import time


def out(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


class PluginStub:
    def get_networks(self, *a, **kw):
        return []

    def get_ports(self, *a, **kw):
        return []


class MonitorStub:
    """external_process.ProcessMonitor without its respawn thread."""

    def register(self, uuid, service_name, monitored_process):
        pass

    def unregister(self, uuid, service_name):
        pass


def setup_conf(state_dir):
    from oslo_config import cfg
    from neutron.agent import dhcp_agent
    conf = cfg.CONF
    dhcp_agent.register_options(conf)
    conf([], project='neutron')
    conf.set_override('dhcp_confs', os.path.join(state_dir, 'dhcp'))
    conf.set_override('external_pids', os.path.join(state_dir, 'external'))
    # dnsmasq's log to a file, the only way to see its "read" lines
    conf.set_override('dnsmasq_base_log_dir', os.path.join(state_dir, 'log'))
    conf.set_override('interface_driver',
                      'null')
    conf.set_override('root_helper', '', 'AGENT')
    conf.set_override('host', 'bench-host')
    from neutron import privileged
    from oslo_privsep import priv_context
    for value in vars(privileged).values():
        if isinstance(value, priv_context.PrivContext):
            value.set_client_mode(False)   # we are root: run in-process
    return conf


def main():
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from neutron.agent.dhcp import agent as dhcp_agent_mod
    from neutron.agent.linux import dhcp
    state = {}
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req['cmd']
        if cmd == 'init':
            conf = setup_conf(req['state_dir'])
            cache = dhcp_agent_mod.NetworkCache.__new__(
                dhcp_agent_mod.NetworkCache)
            # NetworkCache.__init__ minus its eventlet looping call
            cache.cache, cache.subnet_lookup, cache.port_lookup = {}, {}, {}
            cache._deleted_ports, cache._deleted_ports_ts = set(), []
            network = dhcp.NetModel(req['network'])
            cache.put(network)
            monitor, plugin = MonitorStub(), PluginStub()

            def driver():
                return dhcp.Dnsmasq(conf, cache.get_network_by_id(
                    network.id), monitor, None, plugin, None)
            d = driver()
            d.interface_name = req['interface']
            d.spawn_process()
            pm = d._get_process_manager()
            state.update(conf=conf, cache=cache, driver=driver, pm=pm,
                         network_id=network.id)
            out({'pid': pm.pid, 'cmdline': open(
                '/proc/%d/cmdline' % pm.pid).read().split('\0')[:-1],
                'log': os.path.join(req['state_dir'], 'log', network.id,
                                    'dhcp_dns_log'),
                'hosts': d.get_conf_file_name('host')})
        elif cmd in ('add', 'remove'):
            cache = state['cache']
            times = {}
            # note when the SIGHUP is sent (ip_lib runs `ip netns exec ..
            # kill -HUP pid` through neutron.agent.common.utils.execute)
            from neutron.agent.common import utils
            real_execute = utils.execute

            def execute(cmd_, *a, **kw):
                try:
                    return real_execute(cmd_, *a, **kw)
                finally:
                    if 'kill' in cmd_ and '-HUP' in cmd_:
                        times['hup'] = time.monotonic()
            utils.execute = execute
            try:
                times['t0'] = time.monotonic()
                if cmd == 'add':
                    port = dhcp.DictModel(req['port'])
                    cache.put_port(port)
                else:
                    port = cache.get_port_by_id(req['port_id'])
                    cache.remove_port(port)
                # call_driver: a new driver instance per call
                state['driver']().reload_allocations()
                times['end'] = time.monotonic()
            finally:
                utils.execute = real_execute
            out(times)
        elif cmd == 'stop':
            pid = state.get('pm') and state['pm'].pid
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            out({'stopped': pid})
            return


if __name__ == '__main__':
    main()
