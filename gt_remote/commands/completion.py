"""Shell completion: click's own scripts, and HOST completed from what the user has configured.

A HOST is offered when the gt-remote config has a `[hosts.NAME]` table, when ssh_config has a
`Host` alias for it (patterns with `*`, `?` or `!` are not names), or when gt-remote knows it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gt_remote.base.errors import GtRemoteError, UsageError
from gt_remote.base.paths import config_file, known_host_names

if TYPE_CHECKING:  # every command imports this module for its HOST hook: it must cost nothing
    import click
    from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_GT_REMOTE_COMPLETE"
MAX_INCLUDE_DEPTH = 8  # ssh's own limit is 16; a loop must not hang a Tab press


def script(cli: click.Command, shell: str) -> str:
    """The completion script for `shell`, as `_GT_REMOTE_COMPLETE=<shell>_source gt-remote` prints it."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise UsageError(f"no completion for shell {shell!r}", f"use one of {', '.join(SHELLS)}")
    return cls(cli, {}, "gt-remote", COMPLETE_VAR).source()


def ssh_config_aliases(path: Path, depth: int = 0) -> Iterator[str]:
    """`Host` names of an ssh_config file and the files it Includes; unreadable files give none."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        words = _words(line)
        if len(words) < 2:
            continue
        keyword = words[0].lower()
        if keyword == "host":
            yield from (name for name in words[1:] if not any(c in name for c in "*?!"))
        elif keyword == "include" and depth < MAX_INCLUDE_DEPTH:
            import glob

            for pattern in words[1:]:
                for included in sorted(glob.glob(os.path.expanduser(pattern) if pattern.startswith(("/", "~")) else str(Path.home() / ".ssh" / pattern))):
                    yield from ssh_config_aliases(Path(included), depth + 1)


def _words(line: str) -> list[str]:
    text = line.strip().replace("=", " ", 1)
    if not text or text.startswith("#"):
        return []
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def host_names(ssh_config: str | None, config_path: str | None) -> list[str]:
    """Every HOST a user is likely to mean, sorted, each once."""
    from gt_remote.base.config_file import load_config  # the tables only: not the settings dataclass or the back tunnels parser

    try:
        names: set[str] = set(known_host_names())
    except GtRemoteError:
        names = set()  # an unsafe state directory must not break Tab; commands report it
    try:
        names.update(load_config(Path(config_path) if config_path else config_file()))
    except GtRemoteError:
        pass  # a broken config must not break Tab; commands report it
    names.update(ssh_config_aliases(Path(ssh_config).expanduser() if ssh_config else Path.home() / ".ssh" / "config"))
    return sorted(names)


def complete_host(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """click's completion hook for HOST arguments; -F and --config typed so far are honoured."""
    from click.shell_completion import CompletionItem

    root = ctx.find_root().params
    return [CompletionItem(name) for name in host_names(root.get("ssh_config"), root.get("config_path")) if name.startswith(incomplete)]
