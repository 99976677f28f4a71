"""The relay: its own code (relay_agent.py, built with the stream core into one uploaded file), the build, and its deployment on the remote."""
