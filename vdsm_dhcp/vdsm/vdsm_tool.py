"""vdsm-tool drop-in, installed as <vdsm package>/tool/vdsm_dhcp.py.

vdsm-tool loads every module of vdsm/tool and offers each @expose(name)'d
function as a command, called with the command name and its arguments
(like ovirt-provider-ovn's ovn-config). What it returns is the exit status,
which is why these are not wrapped in vdsm.tool.requiresRoot: its wrapper
drops the return value.

Like the supervdsm drop-in, it imports only the standard library and vdsm
when loaded (a module that fails to import breaks every vdsm-tool command),
and vdsm_dhcp only when one of its commands runs.
"""
import sys

from . import expose  # resolves to vdsm.tool once installed


def _run(subcommand, args):
    try:
        from vdsm_dhcp.front import cli
    except Exception as e:   # not installed, or a dependency missing
        print('vdsm-tool: vdsm-dhcp is not usable on this host: cannot '
              'import vdsm_dhcp.front.cli (%s: %s)' % (type(e).__name__, e),
              file=sys.stderr)
        return 1
    # args[0] is the vdsm-tool command name itself.
    return cli.main([subcommand] + list(args[1:]))


@expose('dhcp-set')
def dhcp_set(*args):
    """
    dhcp-set NAME=UUID [NAME=UUID ...] | --json FILE
    Serve DHCP on exactly these VDSM networks, each with the Quantum network
    owning its addresses (what the Host.setDHCP verb does).
    """
    return _run('set', args)


@expose('dhcp-clear')
def dhcp_clear(*args):
    """
    dhcp-clear
    Stop serving DHCP on this host (Host.setDHCP with an empty list).
    """
    return _run('clear', args)


@expose('dhcp-status')
def dhcp_status(*args):
    """
    dhcp-status [--json]
    Show the vdsm-dhcp agent, its networks, and what each one serves.
    """
    return _run('status', args)
