"""VDSM hooks: close the VM-start race, report DHCP in the caps.

Installed as /usr/libexec/vdsm/hooks/<point>/50_vdsm_dhcp. VDSM runs the VM
hooks as vdsm:kvm and the network hooks as root, in a new process each
time, and treats ANY non-zero exit as an error: for before_vm_start and
before_nic_hotplug the VM start or the hot-plug fails (lib/vdsm/common/
hooks.py, _runHooksDir). So:
- exit 0 on every problem of our own (config, networks file, XML, the
  agent down or answering nonsense, a bug): the VM starts and stderr,
  which VDSM logs, says why;
- exit 2 only for a deliberate refusal: strict mode (host [hooks] strict,
  or the VM's dhcp_wait_strict=true) and a vNIC that the agent did not
  confirm servable in time.
after_get_caps and after_network_setup never fail their operation.

The hook is a new process per VM start, so it imports the standard library
only: settings.py reads the main config file, client.py talks to the
agent's control socket. The agent does everything privileged.

Per-VM overrides, as VM custom properties (VDSM passes them as environment
variables): dhcp_wait_timeout=<seconds> (0 skips the gate),
dhcp_wait_strict=true|false.
"""
import json
import os
import sys
import time

from vdsm_dhcp import client, settings
from vdsm_dhcp.setdhcp import networks_file

OK, REFUSE = 0, 2
RETRY_INTERVAL = 0.2   # while the agent is not (yet) answering


def log(message):
    # VDSM copies a hook's stderr into vdsm.log
    print('vdsm-dhcp: %s' % message, file=sys.stderr)


def bridged_macs(xml_text):
    """(mac, bridge) of every <interface type='bridge'> in a domain or NIC
    XML document. Raises ValueError for XML that does not parse."""
    import xml.etree.ElementTree as ET   # only when there is XML to read
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise ValueError('not XML: %s' % e) from None
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


def _overrides(conf):
    """(timeout, strict) after the VM's custom properties."""
    timeout, strict = conf.wait_timeout, conf.strict
    raw = os.environ.get('dhcp_wait_timeout')
    if raw:
        try:
            value = float(raw)
            if not value >= 0:
                raise ValueError
            timeout = value
        except ValueError:
            log('ignoring dhcp_wait_timeout=%r: not a number of seconds'
                % raw)
    raw = os.environ.get('dhcp_wait_strict')
    if raw:
        value = settings.parse_bool(raw)
        if value is None:
            log('ignoring dhcp_wait_strict=%r: not true or false' % raw)
        else:
            strict = value
    return timeout, strict


def _ask_until(conf, macs, timeout):
    """The agent's answer to `wait`: (ready macs, {mac: why not}). Retries
    while the agent cannot be reached (it may be starting right after
    setDHCP); anything else is final."""
    started = time.monotonic()
    while True:
        left = max(0.0, timeout - (time.monotonic() - started))
        try:
            reply = client.call(conf.run_dir, 'wait',
                                {'macs': macs, 'timeout': left},
                                timeout=left + 10)
        except client.AgentUnreachable as e:
            if time.monotonic() - started + RETRY_INTERVAL >= timeout:
                return [], {m: str(e) for m in macs}
            time.sleep(RETRY_INTERVAL)
            continue
        except client.ControlError as e:   # refused, or not our protocol
            return [], {m: 'the agent: %s' % e for m in macs}
        if not isinstance(reply, dict) or not isinstance(
                reply.get('not_ready'), dict):
            return [], {m: 'the agent answered %r' % (reply,) for m in macs}
        not_ready = {str(m): str(why) for m, why in
                     reply['not_ready'].items()}
        return [m for m in macs if m not in not_ready], not_ready


def gate(what):
    """The readiness gate for the vNICs in $_hook_domxml."""
    conf = settings.load()
    if conf.problem:
        log('%s: %s' % (what, conf.problem))
    try:
        listed = {n.name for n in networks_file.read(conf.networks_file)}
    except Exception as e:   # unreadable or corrupt: do not block the VM
        log('%s starts without a DHCP check: %s' % (what, e))
        return OK
    if not listed:
        return OK   # this host serves DHCP for nothing: nothing to wait for
    xml_path = os.environ.get('_hook_domxml')
    try:
        with open(xml_path, encoding='utf-8') as f:
            nics = bridged_macs(f.read())
    except (OSError, TypeError, ValueError) as e:
        log('%s starts without a DHCP check: cannot read its XML %s: %s'
            % (what, xml_path, e))
        return OK
    macs = sorted({mac for mac, bridge in nics if bridge in listed})
    if not macs:
        return OK
    timeout, strict = _overrides(conf)
    if timeout == 0:
        return OK
    started = time.monotonic()
    ready, not_ready = _ask_until(conf, macs, timeout)
    elapsed = time.monotonic() - started
    if not not_ready:
        log('%s: DHCP ready for %s after %.3fs' % (what, ', '.join(ready),
                                                   elapsed))
        return OK
    details = '; '.join('%s: %s' % kv for kv in sorted(not_ready.items()))
    if strict:
        log('%s refused (strict): DHCP not confirmed ready after %.1fs: %s'
            % (what, elapsed, details))
        return REFUSE
    log('WARNING: %s starts although DHCP is not confirmed ready after '
        '%.1fs: %s' % (what, elapsed, details))
    return OK


def before_vm_start():
    return gate('VM %s' % os.environ.get('vmId', '?'))


def before_nic_hotplug():
    return gate('NIC hot-plug into VM %s' % os.environ.get('vmId', '?'))


def after_get_caps():
    """Add "dhcp" to the capabilities: agent state, and per listed network
    whether it is served, or why not. On any problem the caps stay exactly
    as they were."""
    path = os.environ.get('_hook_json')
    try:
        with open(path, encoding='utf-8') as f:
            caps = json.load(f)
    except (OSError, TypeError, ValueError, RecursionError) as e:
        log('after_get_caps: caps left as they are: cannot read %s: %s'
            % (path, e))
        return OK
    if not isinstance(caps, dict):
        log('after_get_caps: caps left as they are: not a JSON object')
        return OK
    caps['dhcp'] = dhcp_caps(settings.load())
    tmp = '%s.vdsm-dhcp.%d' % (path, os.getpid())
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(caps, f)
        os.rename(tmp, path)   # VDSM reads back a whole file or the old one
    except OSError as e:
        log('after_get_caps: caps left as they are: cannot write %s: %s'
            % (path, e))
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return OK


def dhcp_caps(conf):
    try:
        listed = networks_file.read(conf.networks_file)
    except Exception as e:
        return {'agent': 'unknown', 'error': str(e), 'networks': {}}
    try:
        status = client.call(conf.run_dir, 'status', timeout=5)
        networks = status['networks']
        return {'agent': 'running', 'host': status['host'],
                'source': {'type': status['source'].get('type'),
                           'reachable': status['source'].get('reachable')},
                'networks': {n['name']: {'quantumId': n['quantumId'],
                                         'served': n['served'],
                                         'reason': n['reason'],
                                         'dhcp_ips': n['dhcp_ips'],
                                         'hosts': n['hosts']}
                             for n in networks}}
    except client.ControlError as e:
        error = str(e)
    except (TypeError, KeyError, AttributeError) as e:
        error = 'the agent answered an unexpected status: %r' % e
    return {'agent': 'not answering' if listed else 'stopped',
            'error': error if listed else None,
            'networks': {n.name: {'quantumId': n.quantum_id,
                                  'served': False, 'reason': error}
                         for n in listed}}


def after_network_setup():
    """Bridges may have come or gone: ask the agent to reconcile now. Runs
    inside supervdsmd's setupNetworks, which it must never fail."""
    conf = settings.load()
    try:
        if not networks_file.read(conf.networks_file):
            return OK
        client.call(conf.run_dir, 'sync', timeout=5)
    except Exception as e:
        log('after_network_setup: the agent was not told to resync: %s' % e)
    return OK


HOOKS = {
    'before_vm_start': before_vm_start,
    'before_nic_hotplug': before_nic_hotplug,
    'after_get_caps': after_get_caps,
    'after_network_setup': after_network_setup,
}


def main(hook_point):
    hook = HOOKS.get(hook_point)
    if hook is None:
        log('installed under an unknown hook point %r: doing nothing'
            % hook_point)
        return OK
    try:
        return hook()
    except BaseException as e:   # a bug of ours must not fail VDSM's operation
        if isinstance(e, SystemExit) and e.code in (None, OK):
            return OK
        log('%s: internal error, carrying on: %r' % (hook_point, e))
        return OK
