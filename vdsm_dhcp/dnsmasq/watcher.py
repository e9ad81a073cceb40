"""One thread per process that reads every dnsmasq's log as it grows
(inotify on the log directories) and wakes whoever waits for a load: the
LoadTrackers of dnsmasq/readiness.py and the agent's `wait` requests."""
import logging
import os
import select
import threading
import time
import weakref

from vdsm_dhcp.host import inotify

log = logging.getLogger('vdsm_dhcp.readiness')


class LoadWatcher:
    """One thread per process reads dnsmasq's logs as they grow (inotify on
    their directories) while an entry is pending: what dnsmasq loaded leaves
    pending at once, and the listeners (the agent's `wait`) are told, so
    no waiter polls. Only while a dnsmasq that read a pending file is still
    busy (reconciling its leases: no event marks its end) is it looked at
    again, after a growing delay."""

    MASK = inotify.IN_MODIFY | inotify.IN_CREATE | inotify.IN_MOVED_TO
    IN_IGNORED = 0x8000          # the watch is gone (directory removed)
    RECHECK_FIRST, RECHECK_MAX = 0.001, 0.1

    def __init__(self):
        self._lock = threading.Lock()
        self._fd = None
        self._failed = False
        self._watched = {}       # watch descriptor -> {tracker}
        self._recheck = {}       # tracker -> (when, delay)
        self._listeners = []     # weak references to callables

    def listen(self, callback):
        """callback() after entries left pending (held weakly when it is
        a bound method: an agent object may go away)."""
        try:
            ref = weakref.WeakMethod(callback)
        except TypeError:
            ref = lambda: callback   # noqa: E731 (a plain function)
        with self._lock:
            self._listeners.append(ref)

    def notify(self):
        with self._lock:
            self._listeners = [r for r in self._listeners if r() is not None]
            listeners = [r() for r in self._listeners]
        for callback in listeners:
            if callback is None:
                continue
            try:
                callback()
            except Exception:
                log.exception('readiness listener failed')

    def watch(self, tracker):
        with self._lock:
            if not self._started():
                return
            directory = os.path.dirname(tracker.log_path)
            wd = inotify._libc.inotify_add_watch(
                self._fd, os.fsencode(directory), self.MASK)
            if wd < 0:       # not created yet: the next expect() retries
                return
            self._watched.setdefault(wd, set()).add(tracker)

    def _started(self):
        if self._fd is not None or self._failed:
            return not self._failed
        fd = inotify._libc.inotify_init1(inotify.IN_NONBLOCK |
                                         inotify.IN_CLOEXEC)
        if fd < 0:
            self._failed = True
            log.warning('no inotify for dnsmasq logs (%s): `wait` answers '
                        'at its fallback interval', os.strerror(
                            inotify.ctypes.get_errno()))
            return False
        self._fd = fd
        threading.Thread(target=self._run, name='readiness',
                         daemon=True).start()
        return True

    def _run(self):
        while True:
            try:
                self._round()
            except Exception:      # never stop telling the waiters
                log.exception('readiness watcher')
                time.sleep(0.1)

    def _round(self):
        with self._lock:
            due = min((when for when, _ in self._recheck.values()),
                      default=None)
        timeout = None if due is None else max(0, due - time.monotonic())
        ready, _, _ = select.select([self._fd], [], [], timeout)
        events = []
        if ready:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                data = b''
            offset = 0
            while offset < len(data):
                wd, mask, _, length = inotify._EVENT.unpack_from(data, offset)
                offset += inotify._EVENT.size
                name = os.fsdecode(data[offset:offset + length].rstrip(b'\0'))
                offset += length
                events.append((wd, mask, name))
        now = time.monotonic()
        with self._lock:
            touched = {t for t, (when, _) in self._recheck.items()
                       if when <= now}
            for wd, mask, name in events:
                if mask & self.IN_IGNORED:
                    self._watched.pop(wd, None)
                    continue
                # the log, or the rotated one dnsmasq may still write
                touched.update(t for t in self._watched.get(wd, ())
                               if name.startswith(
                                   os.path.basename(t.log_path)))
        moved_any = False
        for tracker in touched:
            moved, busy = tracker.settle()
            moved_any |= moved
            with self._lock:
                if busy:
                    _, delay = self._recheck.get(tracker,
                                                 (0, self.RECHECK_FIRST / 2))
                    delay = min(delay * 2, self.RECHECK_MAX)
                    self._recheck[tracker] = (time.monotonic() + delay, delay)
                else:
                    self._recheck.pop(tracker, None)
                if not tracker.busy_count():
                    self._unwatch(tracker)
        if moved_any:
            self.notify()

    def _unwatch(self, tracker):
        for wd, trackers in list(self._watched.items()):
            trackers.discard(tracker)
            if not trackers:
                del self._watched[wd]
                inotify._libc.inotify_rm_watch(self._fd, wd)


WATCHER = LoadWatcher()
