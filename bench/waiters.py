"""The agent's CPU while N `wait` requests block (issue 10.6).

N clients ask `wait` for MACs that never become ready; the agent's CPU time
(utime + stime from /proc/PID/stat) is read over a window while they all
wait. An agent that polls for readiness burns CPU per waiter; one woken by
events should be idle. Run inside tests/isolated:

  tests/isolated .venv/bin/python -m bench.waiters [--waiters 60]
      [--seconds 5]

Prints one JSON line: waiters, window, agent CPU as % of one core.
"""
import argparse
import json
import os
import shutil
import tempfile
import threading
import time

from bench._lab import cpu_seconds, require_isolation
from tests import rig
from vdsm_dhcp.agent import control


def measure(waiters, seconds):
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-bench-')
    os.chmod(base, 0o755)
    host = rig.Host(os.path.join(base, 'host-a'))
    try:
        agent = host.agent()
        replies = []

        def wait(i):
            try:
                replies.append(control.call(host.conf, 'wait', {
                    'macs': [rig.mac(0x900000 + i)],
                    'timeout': seconds + 4}, timeout=seconds + 30))
            except control.ControlError as e:
                replies.append(e)
        threads = [threading.Thread(target=wait, args=(i,), daemon=True)
                   for i in range(waiters)]
        for t in threads:
            t.start()
        time.sleep(2)        # all connected, their sync round done
        before, started = cpu_seconds(agent.proc.pid), time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(agent.proc.pid) - before
        window = time.monotonic() - started
        for t in threads:
            t.join(seconds + 60)
        return {'waiters': waiters, 'window_s': round(window, 2),
                'agent_cpu_pct_of_core': round(100 * used / window, 1),
                'answered': sum(isinstance(r, dict) for r in replies)}
    finally:
        host.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def main():
    require_isolation()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--waiters', type=int, default=60)
    parser.add_argument('--seconds', type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.waiters, args.seconds)))


if __name__ == '__main__':
    main()
