"""The verb's side of setDHCP: validate the list, write the networks file,
start, reload or stop the agent unit through systemd. networks_file is
standard library only (the hooks read the list through it)."""
