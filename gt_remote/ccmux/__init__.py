"""The ccmux (and fugue) wire format: frames, Ping, the status decoder."""
