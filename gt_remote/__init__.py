"""gt-remote: run gastown's polecats on a remote ccmux-server through a supervised SSH tunnel."""

__version__ = "0.1.0"
