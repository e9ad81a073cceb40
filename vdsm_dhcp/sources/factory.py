"""make_source(conf): the IPAM source the configuration names."""
from vdsm_dhcp.sources.base import SourceError


def make_source(conf):
    if conf.source == 'file':
        from vdsm_dhcp.sources.file import FileSource
        return FileSource(conf.file.path)
    if conf.source == 'neutron':
        from vdsm_dhcp.sources.neutron import NeutronSource
        return NeutronSource(conf)
    raise SourceError('unknown source %r' % conf.source)
