"""The `file` source, the embedded default: a JSON document in Neutron API
v2 shape ([file] path), re-read when it changes (inotify on its
directory)."""
import ctypes
import itertools
import json
import logging
import os
import threading
import time
import weakref

from vdsm_dhcp.host.inotify import DirWatch
from vdsm_dhcp.model import Snapshot
from vdsm_dhcp.sources.base import Reachability, SourceError
from vdsm_dhcp.untrusted import show

log = logging.getLogger('vdsm_dhcp.source')


# The kept snapshot goes once no round used it for this long: between
# rounds the planner needs none of it (its memo holds what it made of each
# port), and 10,000 parsed ports are ~9 MB. Rounds closer than this (a
# burst of syncs) share one parse.
KEEP_FOR = 0.5


def _malloc_trim():
    """glibc's malloc_trim(0), or a no-op: the C heap keeps what Python
    freed (the parsed document, a round's plans) until told to give it
    back. Once per dropped snapshot: ~3 ms with the drop at 10,000 ports."""
    try:
        libc = ctypes.CDLL(None)    # ours (find_library forks ldconfig)
        trim = libc.malloc_trim
    except (OSError, AttributeError):    # not glibc
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


release_memory = _malloc_trim()


class FileSource:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._key = None         # (file identity, listed ids) of:
        self._snapshot = None    # the listed networks' data, nothing else
        self.reach = Reachability(log, 'IPAM source')
        self._loaded_at = None
        self._used_at = 0.0      # monotonic, of the last snapshot() call
        self._dropped = None     # weakref of the snapshot dropped, until freed
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self, on_change):
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        self._watch = DirWatch(directory)
        name = os.path.basename(self.path)

        def loop():
            while not self._stopped.is_set():
                kept = self._snapshot is not None or self._dropped is not None
                if name in self._watch.read(timeout=0.25 if kept else 1.0):
                    on_change()
                self.expire(time.monotonic())
        threading.Thread(target=loop, name='file-source',
                         daemon=True).start()

    def stop(self):
        self._stopped.set()

    def expire(self, now):
        """Drop the kept snapshot once unused for KEEP_FOR s; once it is
        freed (the round that holds it is over), give the memory back to
        the system. Returns whether it did."""
        with self._lock:
            if self._snapshot is not None and \
                    now - self._used_at >= KEEP_FOR:
                self._dropped = weakref.ref(self._snapshot)
                self._key = self._snapshot = None
            if self._dropped is None or self._dropped() is not None:
                return False
            self._dropped = None
        release_memory()
        return True

    def _load(self, ids):
        """The snapshot of the listed networks `ids`: the one kept while
        neither the file nor the list changed (see expire), else read
        anew. One parse alive at a time: the kept snapshot goes before the
        file is read, the whole document as soon as the listed networks
        are out of it (with 10,000 ports, two parses at once cost the
        agent ~10 MB)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise SourceError('IPAM file %s does not exist' % self.path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size, ids)
        if key == self._key:
            return self._snapshot
        self._key = self._snapshot = None
        networks, subnets, ports = _listed(self._parse(), ids)
        self._snapshot = Snapshot.from_lists(networks, subnets, ports)
        self._key = key
        self._loaded_at = time.time()
        return self._snapshot

    def _parse(self):
        try:
            with open(self.path, 'rb') as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise SourceError('IPAM file %s: %s' % (self.path, e)) from None
        except RecursionError:
            # the parser recurses per level: a hostile depth ends here,
            # as a bad document, not as the agent's end
            raise SourceError('IPAM file %s: nested too deeply to be an '
                              'IPAM document' % self.path) from None
        if not isinstance(doc, dict) or not all(
                isinstance(doc.get(k, []), list)
                for k in ('networks', 'subnets', 'ports')):
            raise SourceError('IPAM file %s: expected {"networks": [...], '
                              '"subnets": [...], "ports": [...]}, not %s'
                              % (self.path, _shape(doc)))
        return doc

    def snapshot(self, network_ids):
        with self._lock:
            self._used_at = time.monotonic()
            try:
                snap = self._load(frozenset(network_ids))
            except SourceError as e:
                self.reach.failed(e)
                raise
            self.reach.succeeded()
            return snap

    def release(self, network_id):
        pass   # a file owns nothing on our behalf

    def status(self):
        return {'type': 'file', 'path': self.path,
                **self.reach.status(), 'loaded_at': self._loaded_at}


def _listed(doc, ids):
    """(networks, subnets, ports) of the listed networks only (matched as
    Snapshot.from_lists indexes them). Nothing of them is replaced (say,
    repeated strings by one): what is freed amid a kept document leaves
    holes that the planner's long-lived objects fill, and those then keep
    the whole document's memory resident after it is dropped."""
    def listed(items, key):
        return [item for item in items if isinstance(item, dict) and
                isinstance(item.get(key), str) and item[key].lower() in ids]
    return (listed(doc.get('networks', []), 'id'),
            listed(doc.get('subnets', []), 'network_id'),
            listed(doc.get('ports', []), 'network_id'))


JSON_TYPES = {dict: 'object', list: 'array', str: 'string', int: 'number',
              float: 'number', bool: 'boolean', type(None): 'null'}


def _shape(doc):
    """What the top level of a document is, without its content."""
    if not isinstance(doc, dict):
        return 'a JSON %s' % JSON_TYPES.get(type(doc), '?')
    return '{%s}' % ', '.join(
        '%s: %s' % (show(k), JSON_TYPES.get(type(v), '?'))
        for k, v in itertools.islice(doc.items(), 6))
