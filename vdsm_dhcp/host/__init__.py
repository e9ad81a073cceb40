"""The host's network plumbing: namespaces, veths into bridges, bridge
events, running in a namespace, inotify."""
