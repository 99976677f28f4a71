"""Probe, install, start and stop the ccmux server on the remote."""
