"""What a command knows about a host: its lock, its supervisor (spawned, asked, stopped) and its records."""
