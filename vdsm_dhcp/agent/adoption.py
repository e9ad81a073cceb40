"""What the agent finds and leaves: at start, adopt the running dnsmasq of
listed networks and remove whatever else of ours is there (marked
namespaces and devices, dnsmasq, state); at the end with an empty list,
tear everything down. A part of Agent."""
import logging
import os

from vdsm_dhcp.dnsmasq.conf import Files
from vdsm_dhcp.dnsmasq.process import Dnsmasq
from vdsm_dhcp.fileutil import remove_leftovers
from vdsm_dhcp.host.interface import device_names
from vdsm_dhcp.agent.runtime import NetworkRuntime
from vdsm_dhcp.agent.lifecycle import check_traversable, state_ids
from vdsm_dhcp.model import NS_PREFIX, network_of

log = logging.getLogger('vdsm_dhcp.agent')


class Adoption:
    """Start-up adoption and cleaning (a mixin of Agent)."""

    def _prepare_state_dir(self):
        """Never fatal: a full or read-only file system shows, network by
        network, as an error in `status`, and is retried."""
        try:
            os.makedirs(self.conf.state_dir, mode=0o755, exist_ok=True)
            check_traversable(self.conf.state_dir)
        except OSError as e:
            log.error('state dir %s: %s', self.conf.state_dir, e)
        # temp files of a write the previous agent did not finish: with
        # the run lock held, nobody else writes there
        for qid in state_ids(self.conf.state_dir):
            files = Files(self.conf.state_dir, qid)
            for directory in (files.base, files.tmp):
                for name in remove_leftovers(directory):
                    log.info('removed %s/%s, left by a crash',
                             directory, name)

    def _teardown_many(self, qids, reason):
        """In parallel: 100 networks one by one take seconds."""
        for future in [self._pool.submit(self._teardown, q, reason)
                       for q in qids]:
            try:
                future.result()
            except Exception as e:
                log.error('teardown failed: %s', e)

    def teardown_all(self):
        self._teardown_many(list(self.runtimes), 'the networks list is empty')
        for qid in self.served_ids | {n.quantum_id for n in self.listed}:
            self.source.release(qid)
        self.served_ids = set()
        self.clean_stale(set())

    # -- start-up -------------------------------------------------------------
    def adopt_or_clean(self):
        """Adopt the dnsmasq of listed networks; remove anything of ours
        that is not listed (namespaces, veths, dnsmasq, state). With a
        networks file that cannot be read, adopt every dnsmasq of ours and
        remove nothing until a good list is read (the list is unknown, not
        empty)."""
        if not self._list_read:
            log.error('the networks file cannot be read at start: keeping '
                      'every dnsmasq of ours as it is until it can')
            adopt_ids = {network_of(u) for u in state_ids(
                self.conf.state_dir)}
        else:
            adopt_ids = {n.quantum_id for n in self.listed}
        units = self._units_by_network()
        for qid in adopt_ids:
            runtime = NetworkRuntime(self.conf, qid, self._lock)
            # a shard's dnsmasq without its network's first one is
            # adopted too: the first apply sorts out what is still needed
            if runtime.adopt(units.get(qid, ())):
                with self._lock:
                    self.runtimes[qid] = runtime
        if not self._list_read:
            self._clean_pending = True
            return
        self.clean_stale(adopt_ids)

    def _units_by_network(self):
        """quantumId -> the unit ids (itself, its shards) with a state dir."""
        units = {}
        for unit in state_ids(self.conf.state_dir):
            units.setdefault(network_of(unit), []).append(unit)
        return units

    def clean_stale(self, keep_ids):
        """Remove what is ours but belongs to no network in keep_ids
        (a kept network's shards that are no longer needed go at its
        first apply)."""
        namespaces, devices = self.driver.ours()
        keep_devices = {device_names(q)[0] for q in keep_ids}
        for ns in namespaces:
            unit = ns[len(NS_PREFIX):]
            if network_of(unit) in keep_ids:
                keep_devices.add(device_names(unit)[0])
                continue
            log.info('removing stale namespace %s', ns)
            dm = Dnsmasq(self.conf, unit)
            if dm.adopt():
                dm.stop()
            dm.remove_files()
            self.driver.remove(ns, device_names(unit)[0])
        for dev in devices - keep_devices:
            log.info('removing stale device %s', dev)
            self.driver.remove(None, dev)
        for unit in state_ids(self.conf.state_dir):
            if network_of(unit) not in keep_ids and os.path.isfile(
                    os.path.join(self.conf.state_dir, unit, 'pid')):
                dm = Dnsmasq(self.conf, unit)
                if dm.adopt():
                    dm.stop()
                dm.remove_files()
