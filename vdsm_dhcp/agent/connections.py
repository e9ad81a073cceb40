"""The control server's plumbing, kept apart from its policy: peer
credentials, a bounded pool of reusable connection threads, reading one
request line by a deadline, encoding and sending a reply, and warnings
throttled per kind."""
import collections
import grp
import json
import logging
import queue
import socket
import struct
import threading
import time

log = logging.getLogger('vdsm_dhcp.control')

MAX_LINE = 64 * 1024      # the longest request line


def group_id(name):
    try:
        return grp.getgrnam(name).gr_gid
    except (KeyError, TypeError):
        return None


def peer_credentials(sock):
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                            struct.calcsize('3i'))
    return struct.unpack('3i', creds)   # pid, uid, gid


class Throttled:
    """A warning at most once per interval, with how many were left out
    (10,000 refused connects must not write 10,000 log lines)."""

    def __init__(self, interval=10.0):
        self.interval = interval
        self._next = {}
        self._skipped = collections.Counter()

    def warning(self, key, msg, *args):
        now = time.monotonic()
        if now < self._next.get(key, 0):
            self._skipped[key] += 1
            return
        self._next[key] = now + self.interval
        skipped = self._skipped.pop(key, 0)
        log.warning(msg + (' (and %d more like it)' % skipped if skipped
                           else ''), *args)


class Workers:
    """Daemon threads, started when none is idle (up to `limit`), reused,
    ended after a minute idle. Daemons: a `wait` still blocked must not
    hold up the agent's exit."""

    IDLE_EXIT = 60.0

    def __init__(self, limit):
        self.limit = limit
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._idle = 0

    def submit(self, fn, *args):
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            else:
                spawn = self._count < self.limit
                self._count += spawn
        if spawn:
            try:
                threading.Thread(target=self._run, name='control-client',
                                 daemon=True).start()
            except RuntimeError:
                with self._lock:
                    self._count -= 1
                raise
        self._jobs.put((fn, args))

    def _run(self):
        while True:
            try:
                fn, args = self._jobs.get(timeout=self.IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._idle:     # more idle threads than jobs
                        self._idle -= 1
                        self._count -= 1
                        return
                continue
            try:
                fn(*args)
            except Exception:
                log.exception('control: worker')
            with self._lock:
                self._idle += 1


def read_line(conn, pending, deadline):
    """The next request line (at most MAX_LINE + 1 bytes: longer is an
    error), None at the end; socket.timeout past the deadline, however
    slowly the client trickles bytes in."""
    while True:
        end = pending.find(b'\n')
        if 0 <= end < MAX_LINE:
            line = bytes(pending[:end + 1])
            del pending[:end + 1]
            return line
        if len(pending) > MAX_LINE:
            return bytes(pending[:MAX_LINE + 1])
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout('request not received in time')
        conn.settimeout(left)
        data = conn.recv(MAX_LINE + 1)
        if not data:
            line = bytes(pending)
            pending.clear()
            return line or None
        pending += data


def encode_reply(reply):
    try:
        return json.dumps(reply, sort_keys=True).encode() + b'\n'
    except (TypeError, ValueError, RecursionError) as e:
        log.error('control: cannot encode a reply: %s', e)
        return b'{"error": "the agent could not encode its reply", ' \
            b'"ok": false}\n'


def close_quietly(conn):
    try:
        conn.close()
    except OSError:
        pass
