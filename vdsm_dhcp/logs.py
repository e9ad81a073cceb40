"""The agent's logs: journald with fields an operator filters on when it
runs under systemd, plain stderr lines otherwise.

    journalctl -u vdsm-dhcp-agent VDSM_DHCP_NETWORK=<quantumId>
    journalctl -u vdsm-dhcp-agent VDSM_DHCP_MAC=fa:16:3e:00:00:01

A log call about one network or one MAC passes its fields as `extra`:
    log.info('network %s: recovered', name, extra=logs.network(qid, name))
python-systemd's JournalHandler sends every upper-case record attribute as
a journal field; the stderr format ignores them (the message names the
network anyway). Standard library and python-systemd only.
"""
import logging
import os
import sys

NETWORK = 'VDSM_DHCP_NETWORK'            # the quantumId
NETWORK_NAME = 'VDSM_DHCP_NETWORK_NAME'  # the VDSM network (bridge) name
MAC = 'VDSM_DHCP_MAC'
PLAIN_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'


def network(quantum_id, name=None):
    """`extra` for a line about one network."""
    fields = {NETWORK: str(quantum_id)}
    if name:
        fields[NETWORK_NAME] = str(name)
    return fields


def mac(address, quantum_id=None):
    """`extra` for a line about one vNIC (and its network, when known)."""
    fields = {MAC: str(address)}
    if quantum_id:
        fields[NETWORK] = str(quantum_id)
    return fields


def stderr_is_journal(environ=os.environ, fd=2):
    """systemd sets $JOURNAL_STREAM to "DEVICE:INODE" of the stream it
    connects stdout/stderr to (systemd.exec(5)): stderr goes to the
    journal when it is that very stream."""
    value = environ.get('JOURNAL_STREAM', '')
    try:
        device, inode = (int(v) for v in value.split(':'))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup(debug=False, identifier='vdsm-dhcp-agent', journal=None):
    """Log to the journal natively (fields and all) when stderr goes to
    it and python-systemd is there, else plain lines on stderr. Returns
    'journal' or 'stderr'."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    use_journal = stderr_is_journal() if journal is None else journal
    missing = None
    if use_journal:
        try:
            from systemd.journal import JournalHandler
        except ImportError as e:
            missing, use_journal = e, False
    if use_journal:
        handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
        handler.setFormatter(logging.Formatter('%(message)s'))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root.addHandler(handler)
    if missing is not None:
        logging.getLogger(__name__).warning(
            'logging plain lines to the journal: python-systemd is missing '
            '(%s); install python3-systemd for fields such as %s', missing,
            NETWORK)
    return 'journal' if use_journal else 'stderr'
