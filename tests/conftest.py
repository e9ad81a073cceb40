import os
import shutil
import subprocess
import tempfile

import pytest

from vdsm_dhcp import config
from tests import rig

ISOLATED = os.environ.get('VDSM_DHCP_ISOLATED') == '1'


class Host:
    """One test "host": its config, IPAM file, bridges, VMs and agents."""

    def __init__(self, base, name='host-a'):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.conf_path = rig.write_conf(os.path.join(base, 'vdsm-dhcp.conf'),
                                        base, host=name)
        self.conf = config.load(self.conf_path)
        self.ipam = rig.Ipam(self.conf.file.path)
        self.agents = []

    def agent(self, start=True):
        agent = rig.AgentProcess(self.conf_path, self.conf,
                                 os.path.join(self.base, 'agent.log'))
        self.agents.append(agent)
        return agent.start() if start else agent

    def networks(self, *pairs):
        rig.write_networks(self.base, pairs)

    def cleanup(self):
        """Every step runs even if an earlier one fails (a broken test
        must still leave no process, namespace or file behind)."""
        errors = []
        for step in (self._stop_unit, self._stop_agents, self._sweep):
            try:
                step()
            except Exception as e:
                errors.append('%s: %r' % (step.__name__, e))
        if errors:
            raise AssertionError('cleanup of %s: %s' % (self.base, errors))

    def _stop_unit(self):
        rig.write_networks(self.base, [])
        if os.environ.get('DBUS_SYSTEM_BUS_ADDRESS'):
            from vdsm_dhcp.systemd import Systemd
            Systemd().stop(self.conf.agent_unit, timeout=60)

    def _stop_agents(self):
        for agent in self.agents:
            try:
                agent.stop(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()

    def _sweep(self):
        subprocess.run([os.path.join(rig.BIN, 'vdsm-dhcp-agent'),
                        '--config-file', self.conf_path, '--cleanup'],
                       timeout=60, capture_output=True)
        rig.kill_leftover_dnsmasq(self.conf.state_dir)


def _require_isolation():
    if not ISOLATED:
        pytest.fail('this test builds bridges and namespaces: run it through '
                    'tests/isolated (make check does)', pytrace=False)


@pytest.fixture
def lab():
    _require_isolation()
    lab = rig.Lab()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def make_host(tmp_path, lab):
    hosts = []
    # dnsmasq runs as nobody: its state must be reachable (pytest's own
    # tmp dirs are 0700)
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-test-')
    os.chmod(base, 0o755)

    def make(name='host-a'):
        host = Host(os.path.join(base, name), name)
        hosts.append(host)
        return host
    try:
        yield make
    finally:
        failed = []
        for host in hosts:
            try:
                host.cleanup()
            except AssertionError as e:
                failed.append(str(e))
        shutil.rmtree(base, ignore_errors=True)
        assert not failed, failed


@pytest.fixture
def host(make_host):
    return make_host()


@pytest.fixture(scope='session')
def systemd_manager():
    _require_isolation()
    from tests.systemd_manager import SystemdManager
    manager = SystemdManager().start()
    old = os.environ.get('DBUS_SYSTEM_BUS_ADDRESS')
    os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = manager.bus
    try:
        yield manager
    finally:
        if old is None:
            os.environ.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
        else:
            os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = old
        manager.stop()


@pytest.fixture(scope='session')
def neutron():
    """A real Neutron API (MariaDB, RabbitMQ, neutron 29 from PyPI) on
    127.0.0.1 of the test namespace, once per session."""
    from tests.neutron_server import NeutronLab
    lab = NeutronLab()
    try:
        try:
            lab.start()
        except Exception as e:
            pytest.fail('the Neutron lab did not start: %s\n%s'
                        % (e, lab.log_tail()), pytrace=False)
        print('\nNeutronLab.start timings: %s' % lab.timings)
        yield lab
    finally:
        lab.stop()
