"""VDSM drop-ins."""
