"""The agent's metrics: Prometheus' format, parsed back with
prometheus_client's own parser (what every scraper reads)."""
import os
import time

from prometheus_client.parser import text_string_to_metric_families

from vdsm_dhcp.agent import control
from vdsm_dhcp.agent import metrics
from vdsm_dhcp import options

STATUS = {
    'source': {'type': 'file', 'reachable': True},
    'networks': [
        {'name': 'red', 'quantumId': 'q-red', 'served': True, 'reason': None,
         'hosts': 12, 'hosts_loaded': 11, 'leases': 7, 'restarts': 1,
         'reloads': 4, 'last_sync': time.time() - 5},
        {'name': 'blue', 'quantumId': 'q-blue', 'served': False,
         'reason': 'bridge blue is absent', 'hosts': 0, 'last_sync': None},
    ],
}


def scrape(m):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(m.text())
            for s in family.samples}


def test_per_network_values_come_from_the_status():
    samples = scrape(metrics.Metrics(lambda: STATUS))
    red = (('network', 'red'), ('quantum_id', 'q-red'))
    blue = (('network', 'blue'), ('quantum_id', 'q-blue'))
    assert samples[('vdsm_dhcp_network_hosts', red)] == 12
    assert samples[('vdsm_dhcp_network_hosts_loaded', red)] == 11
    assert samples[('vdsm_dhcp_network_leases', red)] == 7
    assert samples[('vdsm_dhcp_network_served', red)] == 1
    assert samples[('vdsm_dhcp_network_served', blue)] == 0
    assert samples[('vdsm_dhcp_network_info', blue + (
        ('reason', 'bridge blue is absent'),))] == 1
    assert samples[('vdsm_dhcp_dnsmasq_restarts_total', red)] == 1
    assert samples[('vdsm_dhcp_dnsmasq_reloads_total', red)] == 4
    assert 4 <= samples[('vdsm_dhcp_network_last_sync_age_seconds', red)] \
        < 3600
    assert ('vdsm_dhcp_network_last_sync_age_seconds', blue) not in samples
    assert samples[('vdsm_dhcp_source_reachable',
                    (('source', 'file'),))] == 1
    assert samples[('vdsm_dhcp_networks_listed', ())] == 2


def test_events_are_counted():
    m = metrics.Metrics(lambda: {'networks': []})
    m.round_took(0.02)
    m.round_took(0.3)
    m.loaded_after(0.015)
    m.wait_answered('ready')
    m.wait_answered('ready')
    m.wait_answered('not_ready')
    m.control_error('wait')
    m.control_error('bad\ncmd')
    samples = scrape(m)
    assert samples[('vdsm_dhcp_reconcile_duration_seconds_count', ())] == 2
    assert samples[('vdsm_dhcp_reconcile_duration_seconds_bucket',
                    (('le', '0.025'),))] == 1
    assert samples[('vdsm_dhcp_readiness_latency_seconds_count', ())] == 1
    assert samples[('vdsm_dhcp_wait_requests_total',
                    (('outcome', 'ready'),))] == 2
    assert samples[('vdsm_dhcp_wait_requests_total',     # a refused wait
                    (('outcome', 'refused'),))] == 1
    assert samples[('vdsm_dhcp_control_errors_total',
                    (('cmd', 'invalid'),))] == 1


def test_names_follow_prometheus_conventions():
    m = metrics.Metrics(lambda: STATUS)
    for family in text_string_to_metric_families(m.text()):
        assert family.name.startswith('vdsm_dhcp_')
        if family.type == 'counter':
            assert all(s.name.endswith(('_total', '_created'))
                       for s in family.samples)
        assert family.documentation


def test_textfile_is_written_atomically(tmp_path):
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf.register_opts(options.metrics_opts, group=metrics.GROUP)
    path = tmp_path / 'vdsm_dhcp.prom'
    conf([], default_config_files=[])
    conf.set_override('textfile', str(path), group=metrics.GROUP)
    conf.set_override('interval', 1.0, group=metrics.GROUP)
    m = metrics.Metrics(lambda: STATUS)
    m.start(conf)
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 'vdsm_dhcp_network_hosts' in path.read_text()
        assert [p for p in os.listdir(tmp_path)] == ['vdsm_dhcp.prom']
    finally:
        m.stop()


def test_vdsm_dhcp_metrics_from_a_real_agent(host, lab):
    """`vdsm-dhcp metrics` through the control socket: what a scraper
    gets from a running agent, parsed by prometheus_client."""
    import subprocess

    from tests import rig
    from tests.integration.test_agent_e2e import one_network
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    agent.wait_served('red')
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    reply = control.call(host.conf, 'wait', {'macs': [port['mac_address']],
                                             'timeout': 30})
    assert reply['ready'] == [port['mac_address']]
    r = subprocess.run([rig.BIN + '/vdsm-dhcp', '--config-file',
                        host.conf_path, 'metrics'], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    samples = {}
    for family in text_string_to_metric_families(r.stdout):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    red = (('network', 'red'), ('quantum_id', net['id']))
    assert samples[('vdsm_dhcp_network_served', red)] == 1
    assert samples[('vdsm_dhcp_network_hosts', red)] == 1
    assert samples[('vdsm_dhcp_network_leases', red)] == 1
    assert samples[('vdsm_dhcp_source_reachable', (('source', 'file'),))] == 1
    assert samples[('vdsm_dhcp_wait_requests_total',
                    (('outcome', 'ready'),))] >= 1
    assert samples[('vdsm_dhcp_reconcile_duration_seconds_count', ())] >= 1
    assert samples[('vdsm_dhcp_readiness_latency_seconds_count', ())] >= 1
