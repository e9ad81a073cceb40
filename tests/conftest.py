import os
import shutil
import tempfile
import time

import pytest

from tests import faultlog, leftovers, rig
from tests.rig import Host  # noqa: F401  (its old home; bench used it)

ISOLATED = os.environ.get('VDSM_DHCP_ISOLATED') == '1'


# -- nothing left behind ------------------------------------------------------
RUN = pytest.StashKey()


def pytest_configure(config):
    # every process the session starts carries its token; every temp dir
    # and cgroup it makes is recorded (tests/leftovers.py)
    config.stash[RUN] = leftovers.Run().begin()
    # the fault records of this session form one run (tests/faultlog.py)
    os.environ.setdefault(faultlog.RUN_ENV,
                          time.strftime('%Y%m%d-%H%M%S-') + str(os.getpid()))
    # a SIGTERM (a timeout, `kill`) ends the session as Ctrl-C does: pytest
    # then still tears down every fixture
    leftovers.raise_on_sigterm()


def pytest_runtest_teardown(item, nextitem):
    """A SIGTERM whose exception was swallowed still ends the session,
    after this test's teardown."""
    if leftovers.terminated():
        item.session.shouldstop = 'SIGTERM received'


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """After every fixture's teardown (pytest's own sessionfinish runs
    them): anything of this session still there fails the run, loudly, and
    is then removed by PID and name."""
    run = session.config.stash.get(RUN, None)
    if run is None:
        return
    del session.config.stash[RUN]
    left = run.finish()
    if not left:
        return
    message = ('LEFT BEHIND by this test session (now removed):\n  '
               + '\n  '.join(left))
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    if reporter is not None:
        reporter.write_line('')
        reporter.write_sep('!', 'leftovers', red=True, bold=True)
        reporter.write_line(message, red=True)
    else:
        print(message)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
