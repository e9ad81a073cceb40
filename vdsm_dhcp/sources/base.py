"""IPAM sources: networks, subnets and ports in Neutron API v2 shape.

A source is anything with this interface; the agent knows nothing else:
  start(on_change)  begin watching; call on_change() (from any thread)
                    whenever the data may have changed
  snapshot(ids)     a model.Snapshot of those network ids; raises
                    SourceError when the IPAM cannot be read
  status()          a dict for `vdsm-dhcp status`
  release(id)       the network is no longer served on this host
  stop()
The `file` source is the embedded default; the Neutron API source plugs in
through sources/factory.make_source(); each lives in its own module.

Reachability is the one record of "the IPAM could not be read, since
when, and why", kept by each source, logged once per change of state.
"""
import time

from vdsm_dhcp.errors import VdsmDhcpError


class SourceError(VdsmDhcpError):
    """The IPAM cannot be read (dnsmasq keeps serving what it has)."""


class Reachability:
    """Whether the IPAM could be read at the last attempt; since when not.
    Logged once per change of state (and once per new kind of failure,
    when the caller tells kinds apart). dnsmasq keeps serving what it has
    meanwhile: the log says so."""

    def __init__(self, log, name):
        self._log = log
        self.name = name
        self.error = None
        self.since = None
        self._kind = None

    def failed(self, error, kind=None):
        if self.error is None:
            self._log.error('%s unreachable: %s (dnsmasq keeps serving what '
                            'it has; retrying)', self.name, error)
            self.since = time.time()
        elif kind != self._kind:
            self._log.warning('%s still unreachable, now: %s', self.name,
                              error)
        self._kind = kind
        self.error = str(error)

    def succeeded(self):
        if self.error is not None:
            self._log.info('%s reachable again after %.0fs', self.name,
                           time.time() - self.since)
        self.error = self.since = self._kind = None

    def status(self):
        return {'reachable': self.error is None, 'error': self.error,
                'unreachable_since': self.since}
