"""The networks file: which VDSM networks this host serves DHCP for.

    {"version": 1, "networks": [{"name": "red", "quantumId": "<uuid>"}]}

Written only by setDHCP (atomically, under a lock); read by the agent and
the CLI. A missing file is the empty list; a corrupt one is an error that
names the file, never silently the empty list (that would tear down DHCP).
"""
import contextlib
import errno
import fcntl
import json
import os
import time
from collections import namedtuple

from vdsm_dhcp import errors
from vdsm_dhcp.fileutil import atomic_write

VERSION = 1
MAX_NAME_LEN = 15  # IFNAMSIZ - 1: the bridge carries the network's name
FORBIDDEN_NAME_CHARS = ':./'


class Network(namedtuple('Network', 'name quantum_id')):
    """A listed network: immutable, ordered by name (a namedtuple rather
    than a dataclass: the VM hooks import this module, each a new
    process)."""
    __slots__ = ()

    def to_json(self):
        return {'name': self.name, 'quantumId': self.quantum_id}


def _describe(index, entry):
    if isinstance(entry, dict) and isinstance(entry.get('name'), str):
        return 'network #%d (%r)' % (index, entry['name'])
    return 'network #%d' % index


def validate_name(name, where):
    if not isinstance(name, str):
        raise errors.BadParams('%s: "name" must be a string, not %s'
                               % (where, type(name).__name__))
    problem = None
    if not name:
        problem = 'is empty'
    elif len(name) > MAX_NAME_LEN:
        problem = 'is longer than %d characters' % MAX_NAME_LEN
    elif name.startswith('-'):
        problem = 'starts with "-"'
    else:
        for ch in name:
            if ch in FORBIDDEN_NAME_CHARS:
                problem = 'contains %r' % ch
            elif ch.isspace() or not ch.isprintable():
                problem = 'contains white space or a control character'
            if problem:
                break
    if problem:
        raise errors.BadBridge('%s: name %r %s; a VDSM bridge name is 1-%d '
                               'characters, none of ":./", white space or '
                               'control characters, not starting with "-"'
                               % (where, name, problem, MAX_NAME_LEN))
    return name


_HEX = frozenset('0123456789abcdef')


def _canonical_uuid(value):
    """value in lower case if it is a UUID spelled 8-4-4-4-12, else None
    (checked by hand: the uuid module imports `platform`, ~20 ms of every
    VM hook's start)."""
    lower = value.lower()
    if len(lower) != 36 or any(lower[i] != '-' for i in (8, 13, 18, 23)):
        return None
    if not set(lower.replace('-', '')) <= _HEX:
        return None
    return lower


def validate_uuid(value, where):
    if not isinstance(value, str):
        raise errors.BadParams('%s: "quantumId" must be a string, not %s'
                               % (where, type(value).__name__))
    canonical = _canonical_uuid(value)
    if canonical is not None:
        return canonical
    # uuid.UUID accepts braces, "urn:uuid:" and bare hex: take only the
    # canonical 36-character spelling (any case) to keep ids unambiguous.
    import uuid
    try:
        uuid.UUID(value)
    except ValueError:
        raise errors.BadParams('%s: quantumId %r is not a UUID'
                               % (where, value)) from None
    raise errors.BadParams('%s: quantumId %r is not a UUID in canonical '
                           'form (8-4-4-4-12 hex digits)' % (where, value))


def parse_networks(networks):
    """Validate the verb's argument; return a list of Network, or raise.

    Every error names the offending entry. Nothing is touched here.
    """
    if not isinstance(networks, list):
        raise errors.BadParams('networks must be a list of {"name", '
                               '"quantumId"} objects, not %s'
                               % type(networks).__name__)
    result, names, ids = [], {}, {}
    for index, entry in enumerate(networks):
        where = _describe(index, entry)
        if not isinstance(entry, dict):
            raise errors.BadParams('%s must be an object with "name" and '
                                   '"quantumId", not %s'
                                   % (where, type(entry).__name__))
        unknown = sorted(set(entry) - {'name', 'quantumId'}, key=repr)
        if unknown:
            raise errors.BadParams('%s: unknown key(s) %s'
                                   % (where, ', '.join(map(repr, unknown))))
        for key in ('name', 'quantumId'):
            if key not in entry:
                raise errors.BadParams('%s: missing "%s"' % (where, key))
        name = validate_name(entry['name'], where)
        qid = validate_uuid(entry['quantumId'], where)
        if name in names:
            raise errors.BadParams('%s: name %r is also network #%d'
                                   % (where, name, names[name]))
        if qid in ids:
            raise errors.BadParams('%s: quantumId %s is also network #%d'
                                   % (where, qid, ids[qid]))
        names[name], ids[qid] = index, index
        result.append(Network(name, qid))
    return result


def dumps(networks):
    doc = {'version': VERSION, 'networks': [n.to_json() for n in networks]}
    return json.dumps(doc, indent=2, sort_keys=True) + '\n'


def read(path):
    """The list in the file; [] if there is no file; NetworksFileError if
    it cannot be read or is not a valid networks file."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise errors.NetworksFileError('cannot read networks file %s: %s'
                                       % (path, e.strerror)) from None
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise errors.NetworksFileError('networks file %s is nested too '
                                       'deeply' % path) from None
    except ValueError as e:
        raise errors.NetworksFileError('networks file %s is not valid JSON: '
                                       '%s' % (path, e)) from None
    if not isinstance(doc, dict) or doc.get('version') != VERSION:
        raise errors.NetworksFileError('networks file %s: expected an object '
                                       'with "version": %d' % (path, VERSION))
    try:
        return parse_networks(doc.get('networks'))
    except errors.VdsmDhcpError as e:
        raise errors.NetworksFileError('networks file %s: %s'
                                       % (path, e)) from None


def write(path, networks):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, dumps(networks), mode=0o644)


@contextlib.contextmanager
def locked(path, timeout):
    """Serialize writers of the networks file (an flock beside it)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise errors.Busy('another setDHCP call has held the '
                                      'lock on %s for %ds' % (path, timeout))
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)
