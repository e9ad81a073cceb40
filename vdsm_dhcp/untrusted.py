"""Showing values that came from outside (IPAM data, requests) in logs,
reasons and on a terminal.

show(value) is the one way to put such a value into a message: a repr,
so a newline, an ANSI escape or a bidi control shows as an escape and
cannot forge a log line or drive a terminal; bounded in length and in
nesting, so a 1 MB or 1000-deep value costs a short string (never a
RecursionError). Stdlib only: the VDSM hooks may use it.
"""
import reprlib

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlong = 40


def show(value):
    """A short printable-ASCII-safe repr of an untrusted value."""
    try:
        text = _repr.repr(value)
    except Exception:      # a hostile __repr__ cannot come from JSON, but
        text = '<%s>' % type(value).__name__   # never fail a message
    # repr keeps printable non-ASCII as is; escape anything a terminal
    # could still take for a control (e.g. cut mid-escape by reprlib)
    return text.encode('ascii', 'backslashreplace').decode('ascii')
