"""The control socket's client side, with the standard library only.

The VM hooks and the CLI's query commands use it: each is one short request
to the agent (as CNI's front commands talk only to their daemon), so they
must start fast and import nothing heavy.

Three ways a call fails, kept apart because a caller reacts differently:
AgentUnreachable (no agent, or it did not answer: it may be starting, try
again), RequestRefused (the agent answered "no": asking again the same way
will not help), BadReply (the agent answered something that is not our
protocol).
"""
import errno
import json
import os
import socket
import struct

SOCKET_NAME = 'agent.sock'
MAX_REPLY = 16 * 1024 * 1024


class ControlError(Exception):
    pass


class AgentUnreachable(ControlError):
    pass


class AgentBusy(AgentUnreachable):
    """The agent turned us away for now (too many clients): try again."""


class RequestRefused(ControlError):
    pass


class BadReply(ControlError):
    pass


def socket_path(run_dir):
    return os.path.join(run_dir, SOCKET_NAME)


def call(run_dir, cmd, args=None, timeout=10.0):
    """One request {"cmd": cmd, **args}, one reply; `timeout` bounds the
    whole exchange. Returns the result, or raises a ControlError."""
    path = socket_path(run_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # A blocking connect waits for room in a full backlog (a
        # non-blocking one fails at once with EAGAIN), bounded by
        # SO_SNDTIMEO; the exchange after it by the socket's timeout.
        seconds = max(0.0, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack(
            'll', int(seconds), int((seconds % 1) * 1e6) or
            (0 if seconds else 1)))
        sock.connect(path)
        sock.settimeout(timeout)
        sock.sendall(json.dumps(dict(args or {}, cmd=cmd)).encode() + b'\n')
        line = sock.makefile('rb').readline(MAX_REPLY)
    except FileNotFoundError:
        raise AgentUnreachable('the agent is not running (no socket %s)'
                               % path) from None
    except ConnectionRefusedError:
        raise AgentUnreachable('the agent is not running (socket %s refuses '
                               'connections)' % path) from None
    except socket.timeout:
        raise AgentUnreachable('the agent did not answer within %ss'
                               % timeout) from None
    except BlockingIOError as e:    # EAGAIN: the backlog stayed full
        raise AgentBusy('the agent is busy (%s)' % os.strerror(
            e.errno or errno.EAGAIN)) from None
    except OSError as e:
        raise AgentUnreachable('cannot talk to the agent at %s: %s'
                               % (path, e.strerror or e)) from None
    finally:
        sock.close()
    if not line:
        raise AgentUnreachable('the agent closed the connection without '
                               'answering')
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        raise BadReply('the agent answered something that is not JSON: '
                       '%r' % line[:80]) from None
    if not isinstance(reply, dict) or not isinstance(reply.get('ok'), bool):
        raise BadReply('the agent answered %r, not {"ok": ...}'
                       % (line[:80],))
    if not reply['ok']:
        error = reply.get('error')
        error = error if isinstance(error, str) else 'refused without a reason'
        if reply.get('busy') is True:
            raise AgentBusy('the agent is busy: %s' % error)
        raise RequestRefused(error)
    return reply.get('result')
