"""SSH connection, forwarding, health and the reconnect policy."""
