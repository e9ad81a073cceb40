"""wait_until: the one poll loop, for what gives no event to wait on (a
pid file appearing, a process ending, a systemd unit's state)."""
import time


def wait_until(ready, timeout, interval=0.01):
    """Call ready() until it returns something true, and return that; None
    once `timeout` seconds have passed without (ready() is called once
    more at the end). An exception from ready() ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        result = ready()
        if result or time.monotonic() > deadline:
            return result or None
        time.sleep(interval)
