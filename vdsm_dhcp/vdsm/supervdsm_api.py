"""supervdsm drop-in, installed as <vdsm package>/supervdsm_api/vdsm_dhcp.py.

supervdsmd (root) imports every module of its supervdsm_api package, with
no `try`, and exposes their @expose'd functions; vdsmd `Requires=`
supervdsmd. A drop-in whose import fails therefore stops the whole host.
So this module imports only the standard library and vdsm when it is
loaded, and vdsm_dhcp only inside setDHCP, where any failure becomes
VDSM's error envelope (code 100) with a message that says what is missing.

vdsmd's Host.setDHCP reaches this as supervdsm.getProxy().setDHCP(networks).
The work needs root (the networks file under /var/lib, systemd).
"""
import logging

from . import expose  # resolves to vdsm.supervdsm_api once installed

GENERAL_EXCEPTION = 100


def _error(message):
    logging.getLogger('vdsm_dhcp').error('setDHCP: %s', message)
    return {'status': {'code': GENERAL_EXCEPTION, 'message': message}}


@expose
def setDHCP(networks):
    try:
        from vdsm_dhcp.setdhcp import verb
    except Exception as e:   # not installed, or a dependency missing
        return _error('vdsm-dhcp is not usable on this host: cannot import '
                      'vdsm_dhcp.setdhcp.verb (%s: %s); install the vdsm-dhcp '
                      'package and its dependencies'
                      % (type(e).__name__, e))
    try:
        # answers with VDSM's status envelope; does not raise for bad input
        return verb.set_dhcp(networks)
    except Exception as e:
        return _error('setDHCP failed: %s: %s' % (type(e).__name__, e))
