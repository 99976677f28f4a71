"""Benchmarks of gt-remote side by side with OpenSSH and autossh (make bench)."""
