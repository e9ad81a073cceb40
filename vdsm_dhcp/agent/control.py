"""The agent's control socket: line-delimited JSON over a Unix socket.

Request:  {"cmd": "status"}            one JSON object per line
Reply:    {"ok": true, "result": ...}  or {"ok": false, "error": "..."}

Peers are checked with SO_PEERCRED: root, or a member (primary gid) of the
configured group. Nothing a client does may stop the socket answering:
- every connection has its own thread (reused: starting one per connect
  made the accept loop too slow for a connect flood, whose backlog then
  made everyone's connect fail), a deadline to send each request (a slow
  or silent client) and one to read each reply (a client that never
  reads): past either it is dropped;
- clients are counted per peer uid: one user's flood (a runaway script in
  the hooks' group) cannot take the places of another user's; root has its
  own count outside the shared pool, and every other user keeps a few
  places even when the pool is full (the VM hooks, as vdsm);
- a refused client is answered without blocking and never by the accept
  loop's thread in a way that can raise; no error from a client ends it.
"""
import collections
import json
import logging
import os
import select
import socket
import threading
import time

from vdsm_dhcp import client
from vdsm_dhcp.agent.connections import (MAX_LINE, Throttled, Workers,
                                         close_quietly, encode_reply,
                                         group_id, peer_credentials,
                                         read_line)

log = logging.getLogger('vdsm_dhcp.control')

SOCKET_NAME = client.SOCKET_NAME
SHARED_CLIENTS = 512      # all users but root together
RESERVED_PER_UID = 8      # places a user has even when that pool is full,
RESERVE = 64              # taken from this many (many users at once)
REFUSED_LINGER = 1.0      # seconds a refused client has to read its answer
REFUSED_KEPT = 64         # refused connections lingering at most


# the client side lives in client.py (standard library only, for the hooks)
ControlError = client.ControlError

_current = threading.local()   # the connection a handler serves


def socket_path(conf):
    return client.socket_path(conf.run_dir)


def peer_gone():
    """For a handler that blocks (wait): the client that asked has closed
    its socket, nobody will read the answer. (Only a full close: a client
    that shut down its sending side, as `nc -N` does, still reads.)"""
    conn = getattr(_current, 'conn', None)
    if conn is None:
        return False
    try:
        poller = select.poll()
        poller.register(conn, 0)     # POLLHUP and POLLERR come anyway
        return any(events & (select.POLLHUP | select.POLLERR |
                             select.POLLNVAL)
                   for _, events in poller.poll(0))
    except (OSError, ValueError):
        return True


class ControlServer:
    def __init__(self, conf, handlers, on_error=None):
        self.path = socket_path(conf)
        self.on_error = on_error        # fn(cmd): a request answered "no"
        self.gid = group_id(conf.control_group)
        self.read_timeout = conf.control_read_timeout
        self.send_timeout = conf.control_send_timeout
        self.per_uid = conf.control_clients_per_uid
        self.handlers = handlers        # cmd -> fn(request dict) -> result
        self._clients = collections.Counter()   # uid -> open connections
        # enough threads for every connection admitted: none ever queues
        self._workers = Workers(self.per_uid + SHARED_CLIENTS + RESERVE)
        self._counts = threading.Lock()
        self._refused = collections.deque()     # (close at, conn)
        self._log = Throttled()
        self._sock = None
        self._stopped = False

    def start(self):
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chown(self.path, 0, self.gid if self.gid is not None else 0)
        os.chmod(self.path, 0o660)
        sock.listen(socket.SOMAXCONN)
        # wakes the accept loop to close lingering refused connections
        sock.settimeout(REFUSED_LINGER)
        self._sock = sock
        threading.Thread(target=self._accept, name='control',
                         daemon=True).start()

    def stop(self):
        self._stopped = True
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)   # wakes accept()
            except OSError:
                pass
            self._sock.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def allowed(self, uid, gid):
        return uid == 0 or (self.gid is not None and gid == self.gid)

    # -- accepting ----------------------------------------------------------
    def _accept(self):
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                self._close_refused()
                continue
            except OSError as e:
                if self._stopped:
                    return
                # EMFILE, ENFILE, ENOBUFS...: the connection waits in the
                # backlog; try again once something was closed
                self._log.warning('accept', 'control: accept failed: %s', e)
                self._close_refused(everything=True)
                time.sleep(0.05)
                continue
            try:
                self._admit(conn)
            except Exception:
                log.exception('control: dropping a connection')
                close_quietly(conn)
            self._close_refused()

    def _admit(self, conn):
        conn.settimeout(None)   # accept() gave it the listener's timeout
        _, uid, gid = peer_credentials(conn)
        if not self.allowed(uid, gid):
            self._log.warning('refused', 'control: refused peer uid %d '
                              'gid %d', uid, gid)
            self._refuse(conn, {'ok': False, 'error': 'permission denied'})
            return
        if not self._take(uid):
            self._log.warning('busy-%d' % uid, 'control: uid %d holds %d '
                              'connections already: refused one', uid,
                              self._clients[uid])
            self._refuse(conn, {'ok': False, 'busy': True, 'error':
                                'too many clients of uid %d; try again'
                                % uid})
            return
        try:
            self._workers.submit(self._serve, conn, uid)
        except RuntimeError:      # cannot start a thread now
            self._release(uid)
            self._refuse(conn, {'ok': False, 'busy': True,
                                'error': 'the agent is overloaded; '
                                         'try again'})

    def _take(self, uid):
        """Root: its own places. Others: a shared pool, past which each
        still gets its first few (the hooks' user among a crowd)."""
        with self._counts:
            mine = self._clients[uid]
            if mine >= self.per_uid:
                return False
            if uid != 0:
                others = sum(n for u, n in self._clients.items() if u != 0)
                if others >= SHARED_CLIENTS + (
                        RESERVE if mine < RESERVED_PER_UID else 0):
                    return False
            self._clients[uid] += 1
            return True

    def _release(self, uid):
        with self._counts:
            self._clients[uid] -= 1
            if self._clients[uid] <= 0:
                del self._clients[uid]

    def _refuse(self, conn, reply):
        """Answer without blocking (the client may be gone, or may never
        read), then let it read that for a moment: closed at once, a
        client still sending its request would see EPIPE, not why."""
        try:
            conn.send(encode_reply(reply), socket.MSG_DONTWAIT)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            close_quietly(conn)
            return
        self._refused.append((time.monotonic() + REFUSED_LINGER, conn))
        if len(self._refused) > REFUSED_KEPT:
            close_quietly(self._refused.popleft()[1])

    def _close_refused(self, everything=False):
        now = time.monotonic()
        while self._refused and (everything or self._refused[0][0] <= now):
            close_quietly(self._refused.popleft()[1])

    # -- serving ------------------------------------------------------------
    def _serve(self, conn, uid):
        _current.conn = conn
        pending = bytearray()
        try:
            while True:
                line = read_line(conn, pending,
                                  time.monotonic() + self.read_timeout)
                if line is None:
                    return
                reply = self.handle(line)
                conn.settimeout(self.send_timeout)   # for the whole reply
                conn.sendall(encode_reply(reply))
                if len(line) > MAX_LINE:
                    return     # the rest of that line is not a request
        except (OSError, socket.timeout):
            pass
        except Exception:
            log.exception('control: client of uid %d', uid)
        finally:
            _current.conn = None
            close_quietly(conn)
            self._release(uid)

    def handle(self, line):
        reply = self._handle(line)
        if not reply['ok'] and self.on_error is not None:
            try:
                request = json.loads(line)
                cmd = request.get('cmd') if isinstance(request, dict) \
                    else None
            except (ValueError, RecursionError):
                cmd = None
            self.on_error(cmd)
        return reply

    def _handle(self, line):
        if len(line) > MAX_LINE:
            return {'ok': False, 'error': 'request longer than %d bytes'
                    % MAX_LINE}
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            return {'ok': False, 'error': 'request is not JSON (or nested '
                    'too deeply)'}
        if not isinstance(request, dict) or not isinstance(
                request.get('cmd'), str):
            return {'ok': False, 'error': 'request must be an object with '
                    'a "cmd" string'}
        handler = self.handlers.get(request['cmd'])
        if handler is None:
            return {'ok': False, 'error': 'unknown command %r; known: %s'
                    % (request['cmd'][:100], ', '.join(sorted(self.handlers)))}
        try:
            return {'ok': True, 'result': handler(request)}
        except ControlError as e:
            return {'ok': False, 'error': str(e)}
        except Exception as e:
            log.exception('control: %s failed', request['cmd'])
            return {'ok': False, 'error': '%s failed: %s'
                    % (request['cmd'], e)}


def call(conf, cmd, args=None, timeout=10.0):
    """Client side, for callers that hold an oslo conf: see client.call."""
    return client.call(conf.run_dir, cmd, args, timeout)
