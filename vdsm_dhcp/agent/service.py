"""vdsm-dhcp-agent, the program: its arguments, exit statuses, and the
signals held during start-up (the run lock and systemd's notify socket
are agent/lifecycle.py).

Reloadable from its first instant: SIGHUP and SIGTERM are blocked from
before the slow imports until Agent.run() has its handlers in place, so
one that arrives during start-up waits and is then handled, never a
death. Under systemd (Type=notify), READY=1 is sent once the handlers and
the control socket are up. One agent per run_dir (an flock): a second
one exits with EXIT_ALREADY_RUNNING and touches nothing.
"""
import gc
import os
import signal
import sys

from vdsm_dhcp.agent.lifecycle import AGENT_SIGNALS

# Only in the agent program (its console script, or python -m): other
# programs import this module for its constants.
if __name__ == '__main__' or os.path.basename(
        (getattr(sys, 'argv', None) or [''])[0]) == 'vdsm-dhcp-agent':
    signal.pthread_sigmask(signal.SIG_BLOCK, AGENT_SIGNALS)

import argparse  # noqa: E402
import logging  # noqa: E402

from oslo_config import cfg  # noqa: E402

from vdsm_dhcp import logs, options  # noqa: E402
from vdsm_dhcp.agent.lifecycle import AlreadyRunning  # noqa: E402
from vdsm_dhcp.agent.lifecycle import hold_run_lock  # noqa: E402
from vdsm_dhcp.agent.loop import Agent  # noqa: E402

log = logging.getLogger('vdsm_dhcp.agent')


# Exit statuses a restart cannot cure: the unit does not restart on them
# (setdhcp/systemd.py's RestartPreventExitStatus; keep the two equal).
EXIT_BAD_CONFIG = 2


EXIT_ALREADY_RUNNING = 3


def _tune_gc():
    """The planner's memo holds a few objects per port, alive from round
    to round: with the default thresholds the cyclic collector re-scans
    them all so often that a round at 50,000 ports took twice as long
    (measured: 280 ms without collections, 460-640 ms with). What is
    loaded by now (modules, options) is frozen out of the scans; the
    young generation is collected every 50,000 allocations, not 700
    (the memo's objects are freed by their refcounts, not by it)."""
    gc.freeze()
    gc.set_threshold(50000, 50, 100)


def main(argv=None):
    # when main is reached without the module-level block (imported by
    # another program first): block until run() has its handlers
    signal.pthread_sigmask(signal.SIG_BLOCK, AGENT_SIGNALS)
    parser = argparse.ArgumentParser(
        prog='vdsm-dhcp-agent',
        description='Serve DHCP for the VDSM networks in the networks file.')
    parser.add_argument('--config-file', help='default: $%s or %s'
                        % (options.CONFIG_ENV, options.DEFAULT_CONFIG_FILE))
    parser.add_argument('--cleanup', action='store_true',
                        help='remove every namespace, veth, dnsmasq and '
                             'state of ours, then exit')
    args = parser.parse_args(argv)
    try:
        conf = options.load(args.config_file)
    except cfg.Error as e:
        print('vdsm-dhcp-agent: %s' % e, file=sys.stderr)
        return EXIT_BAD_CONFIG
    logs.setup(debug=conf.debug)
    options.warn_misplaced_secrets(conf.config_path)
    try:
        if args.cleanup:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, AGENT_SIGNALS)
            lock = hold_run_lock(conf.run_dir)   # never under a live agent
            try:
                Agent(conf).clean_stale(set())
            finally:
                os.close(lock)
        else:
            agent = Agent(conf)
            _tune_gc()
            agent.run()
    except AlreadyRunning as e:
        log.error('%s', e)
        return EXIT_ALREADY_RUNNING
    except Exception:
        log.exception('agent failed')
        return 1
    return 0
