"""The agent's control socket: line-delimited JSON over a Unix socket.

Request:  {"cmd": "status"}            one JSON object per line
Reply:    {"ok": true, "result": ...}  or {"ok": false, "error": "..."}
Every connection has its own thread and a read deadline, so a slow or
silent client holds only itself. Peers are checked with SO_PEERCRED: root,
or a member (primary gid) of the configured group.
"""
import grp
import json
import logging
import os
import socket
import struct
import threading

from oslo_config import cfg

log = logging.getLogger(__name__)

SOCKET_NAME = 'agent.sock'
MAX_LINE = 64 * 1024
MAX_CLIENTS = 64

control_opts = [
    cfg.StrOpt('control_group', default='kvm',
               help='Group allowed on the control socket besides root (the '
                    'VM hooks run as vdsm:kvm).'),
    cfg.FloatOpt('control_read_timeout', default=5.0,
                 help='Seconds a client may take to send its request.'),
]


class ControlError(Exception):
    pass


def socket_path(conf):
    return os.path.join(conf.run_dir, SOCKET_NAME)


def _group_id(name):
    try:
        return grp.getgrnam(name).gr_gid
    except (KeyError, TypeError):
        return None


def _peer(sock):
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                            struct.calcsize('3i'))
    return struct.unpack('3i', creds)   # pid, uid, gid


class ControlServer:
    def __init__(self, conf, handlers):
        self.path = socket_path(conf)
        self.gid = _group_id(conf.control_group)
        self.read_timeout = conf.control_read_timeout
        self.handlers = handlers        # cmd -> fn(request dict) -> result
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._sock = None

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
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept, name='control',
                         daemon=True).start()

    def stop(self):
        if self._sock:
            self._sock.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def allowed(self, uid, gid):
        return uid == 0 or (self.gid is not None and gid == self.gid)

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                _reply(conn, {'ok': False, 'error': 'too many clients'})
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        try:
            _, uid, gid = _peer(conn)
            if not self.allowed(uid, gid):
                log.warning('control: refused peer uid %d gid %d', uid, gid)
                _reply(conn, {'ok': False, 'error': 'permission denied'})
                return
            conn.settimeout(self.read_timeout)
            reader = conn.makefile('rb')
            while True:
                line = reader.readline(MAX_LINE + 1)
                if not line:
                    return
                conn.settimeout(None)
                _reply(conn, self.handle(line))
                conn.settimeout(self.read_timeout)
        except (OSError, socket.timeout):
            pass
        finally:
            conn.close()
            self._slots.release()

    def handle(self, line):
        if len(line) > MAX_LINE:
            return {'ok': False, 'error': 'request longer than %d bytes'
                    % MAX_LINE}
        try:
            request = json.loads(line)
        except ValueError:
            return {'ok': False, 'error': 'request is not JSON'}
        if not isinstance(request, dict) or not isinstance(
                request.get('cmd'), str):
            return {'ok': False, 'error': 'request must be an object with '
                    'a "cmd" string'}
        handler = self.handlers.get(request['cmd'])
        if handler is None:
            return {'ok': False, 'error': 'unknown command %r; known: %s'
                    % (request['cmd'], ', '.join(sorted(self.handlers)))}
        try:
            return {'ok': True, 'result': handler(request)}
        except ControlError as e:
            return {'ok': False, 'error': str(e)}
        except Exception as e:
            log.exception('control: %s failed', request['cmd'])
            return {'ok': False, 'error': '%s failed: %s'
                    % (request['cmd'], e)}


def _reply(conn, obj):
    conn.sendall(json.dumps(obj, sort_keys=True).encode() + b'\n')


def call(conf, cmd, args=None, timeout=10.0):
    """Client side: one request {"cmd": cmd, **args}, one reply; `timeout`
    bounds the whole exchange. Raises ControlError."""
    path = socket_path(conf)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(dict(args or {}, cmd=cmd)).encode() + b'\n')
        line = sock.makefile('rb').readline()
    except FileNotFoundError:
        raise ControlError('the agent is not running (no socket %s)'
                           % path) from None
    except ConnectionRefusedError:
        raise ControlError('the agent is not running (socket %s refuses '
                           'connections)' % path) from None
    except socket.timeout:
        raise ControlError('the agent did not answer within %ss'
                           % timeout) from None
    except OSError as e:
        raise ControlError('cannot talk to the agent at %s: %s'
                           % (path, e.strerror or e)) from None
    finally:
        sock.close()
    if not line:
        raise ControlError('the agent closed the connection')
    reply = json.loads(line)
    if not reply.get('ok'):
        raise ControlError(reply.get('error') or 'unknown error')
    return reply.get('result')
