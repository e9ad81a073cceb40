"""The one error family of vdsm-dhcp, VdsmDhcpError, carrying VDSM's
status codes (lib/vdsm/common/exception.py) where one applies: the verb's
errors here; the agent's (SourceError, DnsmasqError, PlugError) beside
their modules, with the general code. A control-socket client's errors
are client.py's (the other side of a socket, not an error of ours)."""

ERR_BAD_PARAMS = 21
ERR_BAD_BRIDGE = 27
RESOURCE_UNAVAILABLE = 40
GENERAL_EXCEPTION = 100

DONE = {'status': {'code': 0, 'message': 'Done'}}


class VdsmDhcpError(Exception):
    code = GENERAL_EXCEPTION

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self):
        return str(self)

    def envelope(self):
        return {'status': {'code': self.code, 'message': self.message}}


class BadParams(VdsmDhcpError):
    code = ERR_BAD_PARAMS


class BadBridge(VdsmDhcpError):
    code = ERR_BAD_BRIDGE


class Busy(VdsmDhcpError):
    code = RESOURCE_UNAVAILABLE


class NetworksFileError(VdsmDhcpError):
    """The networks file on disk cannot be read or parsed."""


class SystemdError(VdsmDhcpError):
    """systemd refused or failed an operation on the agent unit."""
