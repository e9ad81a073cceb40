"""supervdsm drop-in; installed as
site-packages/vdsm/supervdsm_api/vdsm_dhcp.py.

supervdsmd (root) exposes every @expose'd function of the modules in that
package, so vdsmd's Host.setDHCP reaches this as
supervdsm.getProxy().setDHCP(networks). The work needs root (networks file
under /var/lib, systemd), hence supervdsm and not vdsmd.
"""
from vdsm_dhcp import verb

from . import expose  # resolves to vdsm.supervdsm_api once installed


@expose
def setDHCP(networks):
    # verb.set_dhcp answers with VDSM's status envelope and never raises.
    return verb.set_dhcp(networks)
