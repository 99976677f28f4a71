"""One module per command: what each does, above the host and runtime layers; cli.py parses and prints."""
