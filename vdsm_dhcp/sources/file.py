"""The `file` source, the embedded default: a JSON document in Neutron API
v2 shape ([file] path), re-read when it changes (inotify on its
directory)."""
import itertools
import json
import logging
import os
import threading
import time

from vdsm_dhcp.host.inotify import DirWatch
from vdsm_dhcp.model import Snapshot
from vdsm_dhcp.sources.base import Reachability, SourceError
from vdsm_dhcp.untrusted import show

log = logging.getLogger('vdsm_dhcp.source')


class FileSource:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._stat = None
        self._snapshot = None
        self.reach = Reachability(log, 'IPAM source')
        self._loaded_at = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self, on_change):
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        self._watch = DirWatch(directory)
        name = os.path.basename(self.path)

        def loop():
            while not self._stopped.is_set():
                if name in self._watch.read(timeout=1.0):
                    on_change()
        threading.Thread(target=loop, name='file-source',
                         daemon=True).start()

    def stop(self):
        self._stopped.set()

    def _load(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise SourceError('IPAM file %s does not exist' % self.path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._stat:
            return self._snapshot
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
        self._snapshot = Snapshot.from_lists(doc.get('networks', []),
                                             doc.get('subnets', []),
                                             doc.get('ports', []))
        self._stat = key
        self._loaded_at = time.time()
        return self._snapshot

    def snapshot(self, network_ids):
        with self._lock:
            try:
                snap = self._load()
            except SourceError as e:
                self.reach.failed(e)
                raise
            self.reach.succeeded()
        ids = set(network_ids)
        return Snapshot({k: v for k, v in snap.networks.items() if k in ids},
                        {k: v for k, v in snap.subnets.items() if k in ids},
                        {k: v for k, v in snap.ports.items() if k in ids},
                        {k: v for k, v in snap.notes.items() if k in ids})

    def release(self, network_id):
        pass   # a file owns nothing on our behalf

    def status(self):
        return {'type': 'file', 'path': self.path,
                **self.reach.status(), 'loaded_at': self._loaded_at}


JSON_TYPES = {dict: 'object', list: 'array', str: 'string', int: 'number',
              float: 'number', bool: 'boolean', type(None): 'null'}


def _shape(doc):
    """What the top level of a document is, without its content."""
    if not isinstance(doc, dict):
        return 'a JSON %s' % JSON_TYPES.get(type(doc), '?')
    return '{%s}' % ', '.join(
        '%s: %s' % (show(k), JSON_TYPES.get(type(v), '?'))
        for k, v in itertools.islice(doc.items(), 6))
