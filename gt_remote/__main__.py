from gt_remote.cli import run

# `python -m gt_remote` is the installed command: the same name in usage lines and completion,
# the same exit.
run()
