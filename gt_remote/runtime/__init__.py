"""The supervisor and what it serves: the control socket, the remembered remote, notifications."""
