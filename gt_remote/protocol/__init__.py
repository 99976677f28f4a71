"""The protocols both ends share, without IO: stdlib only, Python 3.8 syntax (the relay is
built from them and runs on the remote's own python3)."""
