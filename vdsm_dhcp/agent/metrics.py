"""The agent's metrics, in Prometheus' exposition format (prometheus_client).

Never on a network port by default. Three ways out:
- the control socket's `metrics` request (`vdsm-dhcp metrics`);
- [metrics] textfile: written atomically every `interval` seconds, for
  node_exporter's textfile collector;
- [metrics] listen = 127.0.0.1:PORT: prometheus_client's HTTP endpoint.

Per-network values are read at scrape time from the agent's own status
(one source of truth, nothing to keep in sync); what happens between
scrapes (reconcile rounds, readiness latencies, `wait` outcomes) is
counted where it happens, through the methods below.
"""
import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import exposition
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    InfoMetricFamily)

from vdsm_dhcp.options import METRICS_GROUP

log = logging.getLogger('vdsm_dhcp.metrics')

GROUP = METRICS_GROUP

NET_LABELS = ('network', 'quantum_id')
# from an IPAM change to dnsmasq having loaded it: ms to seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30)
ROUND_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                 5, 10, 30)


class Metrics:
    def __init__(self, status=None):
        """status: a function returning the agent's status document."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.rounds = Histogram(
            'vdsm_dhcp_reconcile_duration_seconds',
            'Reconcile rounds and how long each took.',
            buckets=ROUND_BUCKETS, registry=self.registry)
        self.readiness = Histogram(
            'vdsm_dhcp_readiness_latency_seconds',
            'From writing a host entry for dnsmasq to dnsmasq having loaded '
            'it.', buckets=LATENCY_BUCKETS, registry=self.registry)
        self.waits = Counter(
            'vdsm_dhcp_wait_requests',
            'Readiness-gate requests (the VM hooks), by outcome: ready, '
            'not_ready (timed out), refused (a bad request).', ['outcome'],
            registry=self.registry)
        self.control_errors = Counter(
            'vdsm_dhcp_control_errors',
            'Control-socket requests answered with an error (what a hook or '
            'the CLI sees as a failure).', ['cmd'], registry=self.registry)
        for outcome in ('ready', 'not_ready', 'refused'):
            self.waits.labels(outcome)
        if status is not None:
            self.registry.register(_StatusCollector(status))
        self._stop = threading.Event()

    # -- counting ------------------------------------------------------------
    def round_took(self, seconds):
        self.rounds.observe(seconds)

    def loaded_after(self, seconds):
        self.readiness.observe(max(0.0, seconds))

    def wait_answered(self, outcome):
        self.waits.labels(outcome).inc()

    def control_error(self, cmd):
        known = isinstance(cmd, str) and cmd.isidentifier() and len(cmd) < 32
        self.control_errors.labels(cmd if known else 'invalid').inc()
        if cmd == 'wait':
            self.waits.labels('refused').inc()

    # -- exposing ------------------------------------------------------------
    def text(self):
        return exposition.generate_latest(self.registry).decode()

    def start(self, conf):
        """The textfile writer and the HTTP endpoint, as configured."""
        group = conf[GROUP]
        if group.listen:
            host, _, port = group.listen.rpartition(':')
            exposition.start_http_server(int(port), host or '127.0.0.1',
                                         registry=self.registry)
            log.info('metrics served on http://%s/metrics', group.listen)
        if group.textfile:
            threading.Thread(target=self._write_loop, name='metrics',
                             args=(group.textfile, group.interval),
                             daemon=True).start()

    def stop(self):
        self._stop.set()

    def _write_loop(self, path, interval):
        failing = None
        while not self._stop.is_set():
            try:
                # temp file then rename: a scraper never reads half a file
                exposition.write_to_textfile(path, self.registry)
                if failing:
                    log.info('metrics: writing %s again', path)
                failing = None
            except OSError as e:
                if str(e) != failing:
                    log.error('metrics: cannot write %s: %s', path, e)
                failing = str(e)
            self._stop.wait(interval)


class _StatusCollector:
    """Per-network and source values, read from the agent's status."""

    def __init__(self, status):
        self.status = status

    def describe(self):
        return []

    def collect(self):
        status = self.status()
        now = time.time()
        hosts = GaugeMetricFamily(
            'vdsm_dhcp_network_hosts', 'Host entries dnsmasq serves.',
            labels=NET_LABELS)
        loaded = GaugeMetricFamily(
            'vdsm_dhcp_network_hosts_loaded',
            'Host entries dnsmasq has confirmed loading.', labels=NET_LABELS)
        leases = GaugeMetricFamily(
            'vdsm_dhcp_network_leases', 'Leases in dnsmasq\'s lease file.',
            labels=NET_LABELS)
        served = GaugeMetricFamily(
            'vdsm_dhcp_network_served',
            '1 if DHCP is served on this network, else 0 (the reason: '
            'vdsm_dhcp_network_info).', labels=NET_LABELS)
        info = InfoMetricFamily(
            'vdsm_dhcp_network', 'Why a network is, or is not, served.',
            labels=NET_LABELS + ('reason',))
        restarts = CounterMetricFamily(
            'vdsm_dhcp_dnsmasq_restarts',
            'dnsmasq restarts by this agent (a command line that changed, '
            'or a dnsmasq that died).', labels=NET_LABELS)
        reloads = CounterMetricFamily(
            'vdsm_dhcp_dnsmasq_reloads', 'SIGHUPs sent to dnsmasq.',
            labels=NET_LABELS)
        sync_age = GaugeMetricFamily(
            'vdsm_dhcp_network_last_sync_age_seconds',
            'Seconds since the network was last applied successfully.',
            labels=NET_LABELS)
        for n in status.get('networks', []):
            labels = [n['name'], n['quantumId']]
            hosts.add_metric(labels, n.get('hosts') or 0)
            loaded.add_metric(labels, n.get('hosts_loaded') or 0)
            if n.get('leases') is not None:
                leases.add_metric(labels, n['leases'])
            served.add_metric(labels, 1 if n.get('served') else 0)
            info.add_metric(labels + [n.get('reason') or
                                      ('served' if n.get('served')
                                       else 'unknown')], {})
            restarts.add_metric(labels, n.get('restarts') or 0)
            reloads.add_metric(labels, n.get('reloads') or 0)
            if n.get('last_sync'):
                sync_age.add_metric(labels, max(0.0, now - n['last_sync']))
        yield from (hosts, loaded, leases, served, info, restarts, reloads,
                    sync_age)
        source = status.get('source') or {}
        reachable = GaugeMetricFamily(
            'vdsm_dhcp_source_reachable',
            '1 if the IPAM source answered the last sync, else 0.',
            labels=('source',))
        reachable.add_metric([str(source.get('type'))],
                             1 if source.get('reachable') else 0)
        yield reachable
        listed = GaugeMetricFamily('vdsm_dhcp_networks_listed',
                                   'Networks in the networks file.')
        listed.add_metric([], len(status.get('networks', [])))
        yield listed
