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
"""


class SourceError(Exception):
    pass
