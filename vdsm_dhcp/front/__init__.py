"""The front programs, for operators and VDSM: the CLI and the VM hooks.
The hooks and the query commands import the standard library only."""
