"""VDSM hooks: close the VM-start race, report DHCP in the caps.

Installed as /usr/libexec/vdsm/hooks/<point>/50_vdsm_dhcp. They run without
VDSM's `hooking` module, as vdsm:kvm (VM hooks) or root (network hooks),
and need no root of their own: the agent does the privileged work and
answers on its control socket. Exit codes as VDSM defines them: 0 ok, 1
failed (go on), 2 failed (abort the operation: only a strict gate does so).

Per-VM overrides, as VM custom properties (VDSM passes them as environment
variables): dhcp_wait_timeout=<seconds> (0 skips the gate),
dhcp_wait_strict=true|false.
"""
import json
import os
import sys
import time
import xml.etree.ElementTree as ET

from oslo_config import cfg

from vdsm_dhcp import config, control, errors, networks_file

OK, FAILED, ABORT = 0, 1, 2

hooks_opts = [
    cfg.FloatOpt('wait_timeout', default=30.0, min=0,
                 help='Longest a VM start (or NIC hot-plug) waits for its '
                      'vNICs to be servable by DHCP.'),
    cfg.BoolOpt('strict', default=False,
                help='Refuse to start the VM (hook exit 2) when a vNIC is '
                     'not servable in time; otherwise start it with a '
                     'warning in vdsm.log.'),
]


def log(message):
    # VDSM copies a hook's stderr into vdsm.log
    print('vdsm-dhcp: %s' % message, file=sys.stderr)


def bridged_macs(xml_text):
    """(mac, bridge) of every <interface type='bridge'> in a domain or NIC
    XML document."""
    root = ET.fromstring(xml_text)
    nics = [root] if root.tag == 'interface' else root.iter('interface')
    result = []
    for nic in nics:
        if nic.get('type') != 'bridge':
            continue
        mac, source = nic.find('mac'), nic.find('source')
        if mac is not None and source is not None and mac.get('address') \
                and source.get('bridge'):
            result.append((mac.get('address').lower(), source.get('bridge')))
    return result


def _env_overrides(conf):
    timeout, strict = conf.hooks.wait_timeout, conf.hooks.strict
    raw = os.environ.get('dhcp_wait_timeout')
    if raw:
        try:
            timeout = max(0.0, float(raw))
        except ValueError:
            log('ignoring dhcp_wait_timeout=%r: not a number' % raw)
    raw = os.environ.get('dhcp_wait_strict')
    if raw:
        strict = raw.strip().lower() in ('1', 'true', 'yes', 'on')
    return timeout, strict


def gate(xml_path, what):
    """The readiness gate for the vNICs in the XML at xml_path."""
    try:
        conf = config.load()
        listed = {n.name for n in networks_file.read(conf.networks_file)}
    except (cfg.Error, errors.VdsmDhcpError) as e:
        log('cannot check DHCP readiness of %s: %s' % (what, e))
        return FAILED
    if not listed:
        return OK   # this host serves DHCP for nothing: nothing to wait for
    try:
        with open(xml_path) as f:
            nics = bridged_macs(f.read())
    except (OSError, ET.ParseError) as e:
        log('cannot read %s XML %s: %s' % (what, xml_path, e))
        return FAILED
    macs = sorted({mac for mac, bridge in nics if bridge in listed})
    if not macs:
        return OK
    timeout, strict = _env_overrides(conf)
    if timeout == 0:
        return OK
    started = time.monotonic()
    reply = None
    while reply is None:
        left = timeout - (time.monotonic() - started)
        try:
            reply = control.call(conf, 'wait', {'macs': macs,
                                                'timeout': max(0.0, left)},
                                 timeout=max(0.0, left) + 10)
        except control.ControlError as e:
            # the agent may be starting (setDHCP right before the VM)
            if time.monotonic() - started >= timeout:
                return _not_ready(what, {m: str(e) for m in macs}, strict,
                                  timeout)
            time.sleep(0.05)
    if reply['not_ready']:
        return _not_ready(what, reply['not_ready'], strict, timeout)
    log('%s: DHCP ready for %s after %.3fs' % (
        what, ', '.join(macs), time.monotonic() - started))
    return OK


def _not_ready(what, not_ready, strict, timeout):
    details = '; '.join('%s: %s' % kv for kv in sorted(not_ready.items()))
    if strict:
        log('%s refused: DHCP not ready within %ss (%s)' % (what, timeout,
                                                             details))
        return ABORT
    log('WARNING: %s starts although DHCP is not ready within %ss (%s)'
        % (what, timeout, details))
    return OK


def before_vm_start():
    return gate(os.environ['_hook_domxml'], 'VM %s' % os.environ.get(
        'vmId', '?'))


def before_nic_hotplug():
    return gate(os.environ['_hook_domxml'], 'NIC hot-plug into VM %s'
                % os.environ.get('vmId', '?'))


def after_get_caps():
    """Add "dhcp" to the capabilities: agent state, and per listed network
    whether it is served, or why not. Every other key stays as it is."""
    path = os.environ['_hook_json']
    try:
        with open(path) as f:
            caps = json.load(f)
    except (OSError, ValueError) as e:
        log('cannot read caps JSON %s: %s' % (path, e))
        return FAILED
    caps['dhcp'] = dhcp_caps()
    tmp = path + '.vdsm-dhcp'
    with open(tmp, 'w') as f:
        json.dump(caps, f)
    os.rename(tmp, path)
    return OK


def dhcp_caps():
    try:
        conf = config.load()
        listed = networks_file.read(conf.networks_file)
    except (cfg.Error, errors.VdsmDhcpError) as e:
        return {'agent': 'unknown', 'error': str(e), 'networks': {}}
    try:
        status = control.call(conf, 'status', timeout=5)
    except control.ControlError as e:
        return {'agent': 'not running' if listed else 'stopped',
                'error': str(e) if listed else None,
                'networks': {n.name: {'quantumId': n.quantum_id,
                                      'served': False,
                                      'reason': 'agent not running'}
                             for n in listed}}
    return {'agent': 'running', 'host': status['host'],
            'source': {'type': status['source'].get('type'),
                       'reachable': status['source'].get('reachable')},
            'networks': {n['name']: {'quantumId': n['quantumId'],
                                     'served': n['served'],
                                     'reason': n['reason'],
                                     'dhcp_ips': n['dhcp_ips'],
                                     'hosts': n['hosts']}
                         for n in status['networks']}}


def after_network_setup():
    """Bridges may have come or gone: ask the agent to reconcile now."""
    try:
        conf = config.load()
        if not networks_file.read(conf.networks_file):
            return OK
        control.call(conf, 'sync', timeout=5)
    except control.ControlError as e:
        log('after_network_setup: agent not told to resync: %s' % e)
        return FAILED
    except (cfg.Error, errors.VdsmDhcpError) as e:
        log('after_network_setup: %s' % e)
        return FAILED
    return OK


HOOKS = {
    'before_vm_start': before_vm_start,
    'before_nic_hotplug': before_nic_hotplug,
    'after_get_caps': after_get_caps,
    'after_network_setup': after_network_setup,
}


def main(hook_point):
    try:
        return HOOKS[hook_point]()
    except Exception as e:   # a hook bug must not break VDSM's operation
        log('%s hook failed: %s' % (hook_point, e))
        return FAILED
