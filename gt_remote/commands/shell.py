"""What `up` and `env` print for a shell to evaluate: exports, unsets, a failure, a hint.

`eval "$(gt-remote up HOST)"` (sh, bash, zsh) and `gt-remote up HOST | source` (fish) run
whatever stdout carries, and an empty stdout evaluates as success. So a failure prints
`false`, a command every one of these shells has, which prints nothing and fails: `&&`
chains and `set -e` scripts stop there.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping

from gt_remote.base.addresses import ENV_VARS

SHELLS = ("sh", "bash", "zsh", "fish")  # bash and zsh take the sh syntax
FAILURE_LINE = "false"


def default_shell(env: Mapping[str, str] | None = None) -> str:
    """fish when $SHELL is fish, else sh (the export syntax of sh, bash and zsh)."""
    env = os.environ if env is None else env
    return "fish" if os.path.basename(env.get("SHELL", "")) == "fish" else "sh"


def export_lines(pairs: list[tuple[str, str]], shell: str) -> list[str]:
    """POSIX `export` or fish `set -gx`, each value quoted for that shell."""
    if shell == "fish":
        return [f"set -gx {name} {fish_quote(value)}" for name, value in pairs]
    return [f"export {name}={shlex.quote(value)}" for name, value in pairs]


def fish_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pairs_from_exports(lines: list[str]) -> list[tuple[str, str]]:
    """Read back the POSIX `export NAME=value` lines a supervisor reports."""
    pairs = []
    for line in lines:
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            if name in ENV_VARS:  # names only from the fixed list: a name is shell code, unquoted
                pairs.append((name, value))
    return pairs


def unset_lines(shell: str) -> list[str]:
    """Lines that remove every gt-remote variable from the shell.

    sh's `unset` of an unset name succeeds. fish's `set -e` of an unset name fails (status
    4, silently), and this process cannot see which names the shell holds (a `set -g` is not
    exported), so fish gets every name, each made to succeed: `| source; and ...` goes on.
    """
    if shell == "fish":
        return [f"set -e {name}; or true" for name in ENV_VARS]
    return [f"unset {' '.join(ENV_VARS)}"]


def usage_hint(command: str, shell: str) -> str:
    """The comment shown on a terminal, where printing the lines alone does nothing."""
    if shell == "fish":
        return f"# Run: {command} | source"
    return f'# Run: eval "$({command})"'
