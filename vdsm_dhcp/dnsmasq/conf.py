"""dnsmasq's language, pure: its command line, the opts file, the host and
lease lines, the layout of a network's files, and the parsing of the files
we wrote. The one place that knows dnsmasq's syntax.

Every line given to dnsmasq is rendered here and checked against a strict
shape before it is written: a value that slipped past validation is
refused (DnsmasqError or RenderError), never half-read by dnsmasq.
"""
import grp
import ipaddress
import os
import re
import stat

import netaddr

from vdsm_dhcp.errors import VdsmDhcpError
from vdsm_dhcp.model import NOT_A_HOSTNAME, HostEntry
from vdsm_dhcp.untrusted import show


PORT_MARK = '# port '


BATCH_PREFIX = 'batch-'


# a hostsdir entry that is no port's (a duplicate, unparseable content):
# ':' is never in a port id, so the sync removes the file it names
STALE_KEY = 'stale:'


# The shape of every line we give dnsmasq, checked where it is rendered:
# a value that slipped past validation is refused, never half-read.
_TAG = r'tag:subnet-[A-Za-z0-9][A-Za-z0-9_-]{0,63}'


_V4 = r'(?:[0-9]{1,3}\.){3}[0-9]{1,3}'


_V6 = r'\[[0-9a-f:.]{2,45}\]'


_ROUTES = r'{v4}/[0-9]{{1,2}},{v4}(?:,{v4}/[0-9]{{1,2}},{v4})*'.format(v4=_V4)


OPTS_LINE = re.compile(
    r'{tag},(?:option:router(?:,{v4})?|option:dns-server,{v4}(?:,{v4})*'
    r'|(?:option:classless-static-route|249),{routes}|option:mtu,[0-9]{{2,5}}'
    r'|option6:dns-server,{v6}(?:,{v6})*)'.format(
        tag=_TAG, v4=_V4, v6=_V6, routes=_ROUTES))


RANGE_ARG = re.compile(
    r'--dhcp-range=set:subnet-[A-Za-z0-9][A-Za-z0-9_-]{0,63},'
    r'(?:%s,static,%s|[0-9a-f:]{2,39},static,[0-9]{1,3}),[0-9]+s'
    % (_V4, _V4))


LEASE_LINE = re.compile(r'[0-9]+ [0-9a-f]{2}(?::[0-9a-f]{2}){5} %s \* \*'
                        % _V4)


# dnsmasq reads at most 1024 characters of a line: more is cut into a
# second, bad line
MAX_LINE = 1000


def checked_line(line, shape, what):
    """line, if it is one line of the expected shape; else DnsmasqError
    (the network is retried, nothing is written)."""
    if len(line) > MAX_LINE or not shape.fullmatch(line):
        raise DnsmasqError('refusing to give dnsmasq the %s %s'
                           % (what, show(line)))
    return line


class DnsmasqError(VdsmDhcpError):
    """Something for dnsmasq would be wrong (refused before it is written),
    or dnsmasq did not start."""


def default_group():
    for name in ('nogroup', 'nobody'):
        try:
            grp.getgrnam(name)
            return name
        except KeyError:
            pass
    return None


class Files:
    def __init__(self, state_dir, quantum_id):
        self.base = os.path.join(state_dir, quantum_id)
        self.hosts = os.path.join(self.base, 'hosts')
        self.tmp = os.path.join(self.base, 'tmp')
        self.opts = os.path.join(self.base, 'opts')
        self.leases = os.path.join(self.base, 'leases')
        self.pid = os.path.join(self.base, 'pid')
        self.log = os.path.join(self.base, 'dnsmasq.log')

    def create(self):
        for d in (self.base, self.hosts, self.tmp):
            os.makedirs(d, mode=0o755, exist_ok=True)


def command_line(conf, plan, files, ifname, sharded=False):
    """dnsmasq's argv for a NetworkPlan (one of its shards when sharded):
    all that, when it changes, needs a restart (ranges, interface, files);
    everything else is in files."""
    lease = conf.dnsmasq.lease_duration
    argv = [conf.dnsmasq.binary,
            '--keep-in-foreground', '--conf-file=/dev/null',
            '--no-hosts', '--no-resolv', '--port=0',
            '--bind-interfaces', '--interface=' + ifname,
            '--except-interface=lo',
            '--user=' + conf.dnsmasq.user,
            '--group=' + (conf.dnsmasq.group or default_group() or 'nobody'),
            '--pid-file=' + files.pid,
            '--dhcp-hostsdir=' + files.hosts,
            '--dhcp-optsfile=' + files.opts,
            '--dhcp-leasefile=' + files.leases,
            '--log-facility=' + files.log,
            # The log feeds the readiness gate: keep tenants out of it.
            # Every IPv4 port we serve is a dhcp-host ("known"); an IPv4
            # client we do not know is dropped before any reply or log
            # line (and never NAKed: another host may serve it). Not
            # DHCPv6: a stateless subnet answers clients with no host
            # entry (what they may log is bounded by client_rate).
            # --quiet-dhcp* silences routine per-packet lines; errors and
            # the "read <file>" lines are still logged.
            '--dhcp-ignore=tag:!known,tag:!dhcpv6',
            '--quiet-dhcp', '--quiet-dhcp6',
            '--dhcp-lease-max=%d' % conf.dnsmasq.lease_max]
    if sharded:
        # A host moved to another shard (a shard added or removed) keeps
        # its address: the old shard now ignores its RENEW, at T2 it
        # broadcasts a REBIND, and only an authoritative dnsmasq ACKs a
        # lease it did not grant. Safe here: tag:!known above makes a
        # shard ignore every MAC it does not hold, so it NAKs nobody
        # else's clients.
        argv.append('--dhcp-authoritative')
    for subnet in plan.subnets:
        net = netaddr.IPNetwork(subnet.cidr)
        if subnet.ip_version == 4:
            argv.append('--dhcp-range=set:%s,%s,static,%s,%ds'
                        % (subnet.tag, net.network, net.netmask, lease))
        else:
            argv.append('--dhcp-range=set:%s,%s,static,%d,%ds'
                        % (subnet.tag, net.network, net.prefixlen, lease))
    for arg in argv:
        if arg.startswith('--dhcp-range='):
            checked_line(arg, RANGE_ARG, 'argument')
        elif not arg.isprintable():
            raise DnsmasqError('refusing to give dnsmasq the argument %s'
                               % show(arg))
    return argv


def opts_line(subnet, option, values=()):
    """One --dhcp-optsfile line: "tag:<subnet tag>,<option>[,values]"."""
    return checked_line(','.join(['tag:' + subnet.tag, option] +
                                 [str(v) for v in values]),
                        OPTS_LINE, 'option line')


def opts_content(plan):
    """--dhcp-optsfile lines, as Neutron writes them (tag per subnet)."""
    lines = []
    for s in plan.subnets:
        if s.ip_version == 4:
            routes = list(s.host_routes)
            if routes and s.gateway and not any(
                    d == '0.0.0.0/0' for d, _ in routes):
                # a client that takes option 121 ignores option 3
                routes.append(('0.0.0.0/0', s.gateway))
            # an empty router option stops dnsmasq offering itself
            lines.append(opts_line(s, 'option:router',
                                   [s.gateway] if s.gateway else []))
            if s.dns:
                lines.append(opts_line(s, 'option:dns-server', s.dns))
            if routes:
                flat = [part for route in routes for part in route]
                lines.append(opts_line(s, 'option:classless-static-route',
                                       flat))
                lines.append(opts_line(s, '249', flat))
            if plan.mtu:
                lines.append(opts_line(s, 'option:mtu', ['%d' % plan.mtu]))
        elif s.dns:
            lines.append(opts_line(s, 'option6:dns-server',
                                   ['[%s]' % d for d in s.dns]))
    return ''.join(line + '\n' for line in lines)


def read_regular(path):
    """A regular file's text (bytes kept as surrogates), or None: never
    blocks on a FIFO nor follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, 'rb') as f:
            fd = None
            return f.read().decode('utf-8', 'surrogateescape')
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def read_hostsdir(path):
    """port id -> (file name, HostEntry) from the files we wrote. Never
    raises on what it finds: a port's part that is not exactly what we
    write gives None (so the next sync rewrites it); content outside any
    port's part (or a port in two files) is keyed, as text, under
    STALE_KEY, so that the next sync removes that file."""
    entries = {}
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return entries
    for name in names:
        text = read_regular(os.path.join(path, name))
        if text is None:
            continue
        if not name.startswith(BATCH_PREFIX):
            parts = [(name, text)]
            stray = ''
        else:
            stray, *chunks = text.split(PORT_MARK)
            parts = [chunk.partition('\n')[::2] for chunk in chunks]
        for port_id, body in parts:
            if port_id in entries or STALE_KEY in port_id:
                stray += body
            else:
                entries[port_id] = (name, parse_host_text(port_id, body))
        if stray or not parts:
            entries[STALE_KEY + name] = (name, stray)
    return entries


def lease_line(expiry, mac, ip):
    """One seeded IPv4 lease line (with its newline)."""
    return checked_line('%d %s %s * *' % (expiry, mac, ip), LEASE_LINE,
                        'lease line') + '\n'


HOST_LINE = re.compile(
    r'(?P<mac>[0-9a-f]{2}(:[0-9a-f]{2}){5}),'
    r'(?P<addr>[0-9.]{7,15}|\[[0-9a-f:.]{2,45}\]),'
    r'(?P<name>[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*)')


class RenderError(ValueError):
    """A line for dnsmasq is not of its expected shape: a validation rule
    let something through. Never written."""


def host_line(mac, ip, hostname):
    """One --dhcp-hostsdir line (with its newline)."""
    line = '%s,%s,%s' % (mac, ip if ip.version == 4 else '[%s]' % ip,
                         hostname)
    if not HOST_LINE.fullmatch(line) or NOT_A_HOSTNAME.fullmatch(hostname):
        raise RenderError('refusing to write the host line %s' % show(line))
    return line + '\n'


def host_lines(entry):
    """A HostEntry's --dhcp-hostsdir lines (one per address, without
    newlines), each checked; RenderError when one is not of its shape."""
    return [host_line(entry.mac, ip, entry.hostname).rstrip('\n')
            for ip in entry.ips]


def host_text(entry):
    """The content of a HostEntry's part of a hostsdir file."""
    return ''.join(line + '\n' for line in host_lines(entry))


def parse_host_text(port_id, text):
    """The HostEntry whose host_text() is exactly `text`, or None (a file
    cut short, edited by hand, or not ours): never raises."""
    mac = name = None
    ips = []
    for line in text.splitlines():
        match = HOST_LINE.fullmatch(line)
        if match is None or mac not in (None, match['mac']) or \
                name not in (None, match['name']):
            return None
        mac, name = match['mac'], match['name']
        try:
            ips.append(ipaddress.ip_address(match['addr'].strip('[]')))
        except ValueError:
            return None
    if not ips:
        return None
    entry = HostEntry(port_id, mac, tuple(ips), name)
    try:
        return entry if host_text(entry) == text else None
    except RenderError:
        return None


def written_lines(value):
    """The lines of a hostsdir entry as read_hostsdir gives it: a
    HostEntry's, or the text of what is not ours (under STALE_KEY)."""
    if isinstance(value, HostEntry):
        return host_lines(value)
    return [line for line in (value or '').splitlines() if line]
