from gt_remote.cli import main
from gt_remote.completion import COMPLETE_VAR

# The name users type, so usage lines and shell completion match the installed command.
main(prog_name="gt-remote", complete_var=COMPLETE_VAR)
