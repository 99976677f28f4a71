"""The `gt-remote` command line: parse, call into the packages, print. Errors become one line.

Its length (about 670 lines) is the declarations of every command's options and help, which
`gt-remote --help`, completion and docs/usage.md's checks read in one place; what a command
does lives in commands/ and host/.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gt_remote import __version__
from gt_remote.base import progress
from gt_remote.base.addresses import export_vars
from gt_remote.base.errors import CommandNotExecutable, CommandNotFound, GtRemoteError, NeedsConfirmation, NotUp, UsageError, shell_word
from gt_remote.base.paths import HostFiles, config_file, known_host_names
from gt_remote.base.sanitize import visible, visible_data, visible_lines
from gt_remote.commands import shell as shells
from gt_remote.commands.completion import SHELLS, complete_host, script
from gt_remote.host import client, lifecycle

F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    """Progress on stderr; -q silences it (errors are never silenced)."""
    if not progress.quiet():
        click.echo(f"gt-remote: {visible(message)}", err=True)


def tell(message: str) -> None:
    """A result the user asked for, on stderr even with -q."""
    click.echo(f"gt-remote: {visible(message)}", err=True)


def user_errors(func: F) -> F:
    """The CLI edge: a typed error becomes `gt-remote: error: cause; fix` and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GtRemoteError as error:
            click.echo(f"gt-remote: error: {visible(str(error))}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("gt-remote: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


EVAL_COMMANDS = ("up", "env", "pick")  # their stdout is run by a shell: a failure must fail there too


def fail_the_eval() -> None:
    """Give `eval "$(gt-remote up HOST)"` a failing line, unless a person reads stdout.

    If stdout cannot be written (a full disk, a reader gone), no shell will run that line
    anyway: the error itself, on stderr, is what must still be said."""
    if sys.stdout is None or sys.stdout.isatty():
        return
    try:
        click.echo(shells.FAILURE_LINE)
    except OSError:
        pass


def one_line_usage_error(error: click.ClickException) -> str:
    """click's three-line Usage/Try/Error block, as one `cause; fix` line."""
    message = " ".join(error.format_message().split())
    cause, _, suggestion = message.partition(". ")
    cause = cause.rstrip(".")
    cause = cause[:1].lower() + cause[1:]
    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "gt-remote"
    suggestion = suggestion.strip("()")
    fix = f"{suggestion[:1].lower()}{suggestion[1:]} " if suggestion else ""
    return f"gt-remote: error: {cause}; {fix}see '{path} --help'"


class OneLineErrors(click.Group):
    """A group whose usage errors read like every other error: one line, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        kwargs.setdefault("prog_name", "gt-remote")
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as exit_:
            sys.exit(exit_.exit_code)
        except click.ClickException as error:
            ctx = getattr(error, "ctx", None)
            if ctx is not None and ctx.info_name in EVAL_COMMANDS:
                fail_the_eval()
            click.echo(one_line_usage_error(error), err=True)
            sys.exit(2 if isinstance(error, click.UsageError) else error.exit_code)
        except click.Abort:
            click.echo("gt-remote: interrupted", err=True)
            sys.exit(130)
        except OSError as error:
            if not _stdout_unwritable(error):
                raise
            click.echo(f"gt-remote: error: {cannot_write_output(error)}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _stdout_unwritable(error: OSError) -> bool:
    """Whether `error` came from writing stdout: every line this CLI prints goes through
    click.echo, so its frame in the traceback, printing without err=True, says so. (click
    itself ends quietly, exit 1, when the reader went away: EPIPE never gets here.)"""
    echo_frame = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code is click.echo.__code__:
            echo_frame = trace.tb_frame
        trace = trace.tb_next
    return echo_frame is not None and not echo_frame.f_locals.get("err")


def cannot_write_output(error: OSError) -> str:
    """`gt-remote status > /dev/full`: the cause and the fix, not click's traceback."""
    cause = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write the output: {cause}; free space where it goes, or redirect it elsewhere"
    return f"cannot write the output: {cause}; redirect it to a file or a terminal that can take it"


def _moved_under_a_service(option: str) -> str:
    """Under systemd or launchd, a missing file is one the login service was installed with."""
    if os.environ.get("INVOCATION_ID") or os.environ.get("XPC_SERVICE_NAME"):
        return f"the login service names this file: move it back, or install the service again with 'gt-remote {option} NEW_PATH service install HOST'"
    return ""


class Globals:
    def __init__(self, ssh_config: str | None, config_path: str | None) -> None:
        self.ssh_config = ssh_config
        self.config_path = Path(config_path).expanduser() if config_path else config_file()
        self.config_given = bool(config_path)
        if config_path and not self.config_path.is_file():
            fix = "pass an existing file with --config, or leave --config out for the default"
            raise UsageError(f"config file {self.config_path} does not exist", _moved_under_a_service("--config") or fix)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-F", "ssh_config", metavar="SSH_CONFIG", help="ssh_config file to use, like ssh -F (default ~/.ssh/config).")
@click.option("--config", "config_path", metavar="FILE", help="gt-remote config (default $XDG_CONFIG_HOME/gt-remote/config.toml).")
@click.option("-v", "--verbose", count=True, help="Show the ssh_config, known_hosts and keys used, and each SSH step (-vv: asyncssh too).")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages; errors still show.")
@click.version_option(__version__, "-V", "--version", prog_name="gt-remote")
@click.pass_context
def main(ctx: click.Context, ssh_config: str | None, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Run gastown's polecats on a remote ccmux-server through a supervised SSH tunnel."""
    if verbose and quiet:
        _global_error(UsageError("-v and -q contradict each other", "pass one of them"))
    progress.configure(verbose=verbose, quiet=quiet)
    progress.hush_library_warnings()  # before any command imports asyncssh; -v shows them
    progress.show_steps(tell, propagate=False)
    try:
        ctx.obj = Globals(ssh_config, config_path)
    except GtRemoteError as error:
        _global_error(error)


def _global_error(error: GtRemoteError) -> None:
    if click.get_current_context().invoked_subcommand in EVAL_COMMANDS:
        fail_the_eval()
    click.echo(f"gt-remote: error: {visible(str(error))}", err=True)
    sys.exit(error.exit_code)


def eval_output(func: F) -> F:
    """For commands whose stdout is eval'd: any failure also prints a failing line there.

    Not for `up --foreground`, whose stdout a service manager reads, never a shell, nor for
    `env --if-up`, the rc file's line, which must never fail a new shell (its error is still said
    on stderr, and its exit status still tells a script), nor for `pick --json`, whose stdout is
    JSON for a program.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (GtRemoteError, KeyboardInterrupt):
            if not kwargs.get("foreground") and not kwargs.get("if_up") and not kwargs.get("as_json"):  # --if-up: an rc file's line never fails the shell
                fail_the_eval()
            raise

    return wrapper  # type: ignore[return-value]


SHELL_OPTION = click.option(
    "--shell", type=click.Choice(shells.SHELLS), default=shells.default_shell, show_default="fish if $SHELL is fish, else sh", help="Syntax of the printed lines."
)


def _ssh_config(globals_: Globals) -> str | None:
    if globals_.ssh_config is None:
        return None
    path = Path(globals_.ssh_config).expanduser()
    if not path.is_file():
        fix = "pass an existing file with -F, or leave -F out for ~/.ssh/config"
        raise UsageError(f"ssh_config file {path} does not exist", _moved_under_a_service("-F") or fix)
    return str(path.resolve())


@main.command()
@click.argument("host", shell_complete=complete_host)
@click.option("--remote-port", type=int, help="Loopback port of the server on the remote (default 9999).")
@click.option("--local", help="Local address to export: tcp://127.0.0.1:PORT or unix:///abs/path (default tcp://127.0.0.1:<remote port>).")
@click.option("--server", help="Server program: ccmux-server (default) or fugue-server.")
@click.option("--server-binary", help="A server build for the remote, uploaded if it is not there yet.")
@click.option("--install-command", help="A remote shell command that installs the server when it is missing.")
@click.option("--install-dir", metavar="DIR", help="Remote directory for gt-remote's server builds and relay (default ~/.local/share; for noexec or read-only homes).")
@click.option("--keepalive", type=float, help="Seconds between SSH keepalives; a silent link is dropped after 3 misses (default 5).")
@click.option("--restart-server", is_flag=True, help="Restart a server that runs without TCP (ends its panes).")
@click.option("--resume-window", type=float, metavar="SECONDS", help="How long a client's connection waits for the tunnel to come back (default 900).")
@click.option("--no-resume", is_flag=True, help="Plain forwarding: connections end when the SSH connection does.")
@click.option(
    "--back",
    "back",
    multiple=True,
    metavar="SPEC",
    help="A back tunnel: the remote's 127.0.0.1 port reaches this laptop's (PORT, REMOTE_PORT:127.0.0.1:LOCAL_PORT, dolt, gt-proxy, dolt:13307). Repeatable.",
)
@click.option(
    "--transport",
    type=click.Choice(["auto", "forward", "stdio"]),
    help="How streams reach the remote relay: sshd's channels (forward), an exec channel's stdio (stdio, for Dropbear or DisableForwarding), or auto (default).",
)
@click.option("--foreground", is_flag=True, help="Stay in the foreground as the supervisor (for systemd and launchd).")
@SHELL_OPTION
@click.pass_obj
@user_errors
@eval_output
def up(g: Globals, host: str, foreground: bool, shell: str, no_resume: bool, **options: Any) -> None:
    """Bring HOST's tunnel up and print the export lines: eval "$(gt-remote up HOST)"."""
    overrides = {key: value for key, value in options.items() if value is not None and value is not False}  # 0 is a value, and wrong
    if no_resume:
        overrides["resume"] = False
    if not overrides.get("back"):
        overrides.pop("back", None)  # none given: the config's
    from gt_remote.base.config import given_fields, load_config, resolve

    config = load_config(g.config_path)
    settings = resolve(host, config, overrides, _ssh_config(g))
    if "server_binary" not in overrides:  # the build `gt-remote upgrade` installed wins over the config's
        settings = lifecycle.with_installed_build(settings, say)

    def print_exports(lines: list[str]) -> None:
        _print_for_shell(shell_lines(lines, shell), f"gt-remote{_globals_again(g)} up {shell_word(host)}", shell)

    given = given_fields(config.get(host, {}), overrides)
    lines = lifecycle.up(settings, say, foreground=foreground, on_ready=print_exports, given=given)
    if not foreground:
        print_exports(lines)
        say(f"{host} is up; 'gt-remote status' shows it, 'gt-remote down {shell_word(host)}' stops it")


def _globals_again(g: Globals) -> str:
    """` -F FILE --config FILE` as this command was given them (absolute), for a hint to run
    another gt-remote command the same way; '' without them."""
    words = ["-F", _ssh_config(g) or ""] if g.ssh_config else []
    if g.config_given:
        words += ["--config", str(g.config_path.resolve())]
    return "".join(f" {shell_word(word)}" for word in words)


def shell_lines(exports: list[str], syntax: str) -> list[str]:
    return shells.export_lines(shells.pairs_from_exports(exports), syntax)


def _print_for_shell(lines: list[str], command: str, syntax: str) -> None:
    """The lines to eval, and on a terminal a comment saying how (as docker-machine does)."""
    if sys.stdout.isatty():
        lines = [*lines, shells.usage_hint(command, syntax)]
    click.echo("\n".join(lines))
    sys.stdout.flush()


@main.command()
@click.argument("host", required=False, shell_complete=complete_host)
@click.option("--all", "all_hosts", is_flag=True, help="Stop every host.")
@click.option("--stop-server", is_flag=True, help="Also stop the remote server, if gt-remote started it (connects again if the tunnel is down).")
@click.option("--force", is_flag=True, help="With --stop-server: stop it even while other tunnels share it (their panes end).")
@click.pass_obj
@user_errors
def down(g: Globals, host: str | None, all_hosts: bool, stop_server: bool, force: bool) -> None:
    """Stop HOST's supervisor; the remote server keeps running unless --stop-server."""
    if host and all_hosts:
        raise UsageError(f"--all stops every host, so it takes no HOST (got {host!r})", f"run 'gt-remote down {shell_word(host)}' for that host, or 'gt-remote down --all' for all")
    if not host and not all_hosts:
        raise UsageError("name one HOST or pass --all", "e.g. 'gt-remote down gaming-pc'")
    names = (lifecycle.all_hosts_with_state() if stop_server else known_host_names()) if all_hosts else [host]
    if not names:
        tell("no hosts are up")
    failed: list[str] = []
    for name in names:
        assert name is not None
        try:
            tell(lifecycle.down(name, stop_server, lambda other: _settings(g, other), _ssh_config(g), force=force))
        except GtRemoteError as error:
            if not all_hosts:
                raise
            tell(f"error: {error}" if str(error).startswith(f"{name}:") else f"error: {name}: {error}")  # then the next host
            failed.append(name)
    if failed:
        raise GtRemoteError(f"'down --all' failed for {len(failed)} of {len(names)} hosts: {', '.join(failed)}", "see each host's error above; fix it and run the command again")


@main.command()
@click.argument("host", required=False, shell_complete=complete_host)
@click.option("--all", "all_hosts", is_flag=True, help="Every host that is up.")
@click.option("--force", is_flag=True, help="Reconnect even a link that answers (say, to leave a network that is going away).")
@user_errors
def reconnect(host: str | None, all_hosts: bool, force: bool) -> None:
    """Check HOST's link now and reconnect it if dead: for sleep and network hooks."""
    if bool(host) == all_hosts:
        raise UsageError("name one HOST or pass --all", "e.g. 'gt-remote reconnect gaming-pc'")
    names = [name for name in known_host_names() if (client.live_status(HostFiles(name)) or {}).get("state") not in (None, "connecting")] if all_hosts else [host]
    if not names:
        say("no hosts are up")
    healthy = True
    for name in names:
        assert name is not None
        up_again, message = lifecycle.reconnect(name, force)
        say(message)
        healthy = healthy and up_again
    sys.exit(0 if healthy else 1)


@main.command()
@click.argument("host", required=False, shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--pool", is_flag=True, help="The pool at a glance: one line per host `pick` chooses from, with its load, cap and score; exit 0 if it would find one.")
@click.pass_obj
@user_errors
def status(g: Globals, host: str | None, as_json: bool, pool: bool) -> None:
    """Show each host's tunnel; exit 0 only when every listed host is up."""
    if pool:
        _pool_view(g, host, as_json)
        return
    if host and not lifecycle.is_known(host):
        if as_json:
            click.echo("[]")
        raise GtRemoteError(f"gt-remote has never brought up a host named {host!r}", f"check the name (gt-remote status lists them), or bring it up: eval \"$(gt-remote up {shell_word(host)})\"")
    rows = visible_data(lifecycle.all_statuses(host))  # a remote --version or error may carry escapes
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_status_table(rows))
    sys.exit(0 if all(row["state"] == "up" for row in rows) else 1)


def _status_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no hosts (bring one up with: eval \"$(gt-remote up HOST)\")"
    lines = []
    for row in rows:
        server = row.get("server") or {}
        rtt = f"{row['rtt_ms']:.2f} ms" if row.get("rtt_ms") is not None else "-"
        uptime = _duration(row["uptime_s"]) if row.get("uptime_s") is not None else "-"
        if row["state"] == "down":
            lines += _down_lines(row)
            continue
        lines.append(f"{row['host']}: {row['state']}" + (f" ({row['step']})" if row.get("step") else ""))
        lines.append(f"  local       {row.get('local') or '-'}  ->  remote 127.0.0.1:{row.get('remote_port') or '-'}")
        described = " ".join(str(part) for part in (server.get("name"), server.get("version")) if part)
        lines.append(f"  server      {described} pid {server.get('pid') or '-'}" + (f" build {server['build']}" if server.get("build") else ""))
        other = server.get("other_build")
        if other:
            lines.append(f"  installed   another build there: {other.get('version') or '?'} (build {other.get('build') or other.get('path')}), not running; 'gt-remote upgrade {shell_word(row['host'])} --server-binary PATH' switches")
        restarts = row.get("server_restarts", 0)
        ended = " (its panes ended)" if restarts == 1 else " (the panes ended each time)" if restarts else ""  # a restart is never harmless: say so
        lines.append(f"  uptime {uptime}, reconnects {row.get('reconnects', 0)}, server restarts {restarts}{ended}, rtt {rtt}, supervisor pid {row.get('supervisor_pid') or '-'}")
        restart = row.get("last_server_restart")
        if restart:
            lines.append(f"  restarted   server at {restart.get('at')}: {restart.get('cause')}; pid {restart.get('old_pid') or '-'} -> {restart.get('pid') or '-'}; its panes' processes ended")
        lines.append(f"  streams     {_streams_line(row)}")
        if row.get("load"):
            lines.append(f"  load        {_load_line(row['load'])}")
        lines += [f"  back        {_back_line(back)}" for back in row.get("back") or []]
        if row.get("server_env_lacking"):
            lacking = " ".join(f"{name}={value}" for name, value in sorted(row["server_env_lacking"].items()))
            lines.append(f"  panes lack  {lacking}: 'gt-remote restart-server {shell_word(row['host'])} --yes' restarts the server with them (its panes end)")
        if row.get("tunnels_sharing_server", 1) > 1:
            lines.append(f"  shared      the server is shared by {row['tunnels_sharing_server']} tunnels (also {', '.join(row.get('shared_with') or [])})")
        if row.get("relay_error") or row.get("last_relay_death"):
            lines.append(f"  relay       {_relay_line(row)}")
        if row.get("next_attempt_at") and row["state"] in ("reconnecting", "failed"):
            lines.append(f"  next attempt at {row['next_attempt_at']}")
        if row.get("last_wake") or row.get("last_recovery_s") is not None:
            lines.append(f"  last wake   {_wake_line(row.get('last_wake'))}; last recovery {_seconds(row.get('last_recovery_s'))}")
        if row.get("last_error"):
            lines.append(f"  last error  {row['last_error']}" + ("" if row.get("last_error_past") else f" (since {row.get('since') or '?'})"))
    return "\n".join(lines)


def _load_line(load: dict[str, Any]) -> str:
    """A host's load figures in words: what `pick` weighs."""
    sessions, cpu, cpus = load.get("sessions"), load.get("cpu_load"), load.get("cpus")
    parts = [f"{sessions} session{'' if sessions == 1 else 's'}" if isinstance(sessions, int) else "sessions unknown"]
    if isinstance(cpu, (int, float)) and load.get("cpu_from") == "cgroup":
        parts.append(f"CPU load {cpu:.2f} (the container's own use over {cpus} CPUs)")
    elif isinstance(cpu, (int, float)):
        parts.append(f"CPU load {cpu:.2f} (load average {load.get('load_average')} over {cpus} CPUs)")
    else:
        parts.append("CPU load not measured yet")
    available, total = load.get("mem_available_mb"), load.get("mem_total_mb")
    if isinstance(available, int) and isinstance(total, int):
        parts.append(f"{available / 1024:.1f} of {total / 1024:.1f} GiB memory available")
    way = "through the relay" if load.get("read_by") == "relay" else "by the health check's script"
    return ", ".join(parts) + f"; read {way} {load.get('age_s')} s ago"


def _pool_view(g: Globals, host: str | None, as_json: bool) -> None:
    """`status --pool`: every candidate of `pick` on one line each, and which one it would take."""
    from gt_remote.base.config_file import cached_tables
    from gt_remote.commands import pick as picking

    if host:
        raise UsageError(f"--pool shows every host pick chooses from, so it takes no HOST (got {host!r})", "run 'gt-remote status --pool', or 'gt-remote pick HOST ... --json' for some hosts")
    choice = picking.survey([], cached_tables(g.config_path))
    if as_json:
        click.echo(json.dumps(visible_data(choice.to_dict()), indent=2))
    else:
        click.echo(visible_lines(_pool_table(choice)))
    sys.exit(0 if choice.picked else 1)


def _pool_table(choice: Any) -> str:
    if not choice.candidates:
        return "no hosts to pick from (bring one up with: eval \"$(gt-remote up HOST)\", or mark hosts pool = true in the config)"
    rows = [("host", "state", "sessions", "cpu", "memory free", "rtt", "score", "pick")]
    for candidate in choice.candidates:
        info = candidate.to_dict()
        cap = f"/{info['max_sessions']}" if info["max_sessions"] else ""
        sessions = f"{info['sessions']}{cap}" + (f" +{info['reserved']}" if info["reserved"] else "") if info["sessions"] is not None else "-"
        cpu = f"{info['cpu_load']:.2f}" if isinstance(info["cpu_load"], (int, float)) else "-"
        memory = f"{info['mem_available_mb'] / 1024:.1f}/{info['mem_total_mb'] / 1024:.1f} GiB" if info["mem_total_mb"] else "-"
        rtt = f"{info['rtt_ms']:.2f} ms" if isinstance(info["rtt_ms"], (int, float)) else "-"
        score = f"{info['score']:.2f}" if info["score"] is not None else "-"
        verdict = "<- pick takes it now" if candidate is choice.picked else ("" if candidate.eligible else candidate.why)
        rows.append((candidate.host, candidate.state, sessions, cpu, memory, rtt, score, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip() for row in rows)


def _down_lines(row: dict[str, Any]) -> list[str]:
    """A host that is down, in words: what it was, why it is down, how to bring it back."""
    host = row["host"]
    lines = [f"{host}: down"]
    if row.get("local") and row.get("remote_port"):
        lines.append(f"  was         {row['local']}  ->  remote 127.0.0.1:{row['remote_port']} (no tunnel now)")
    lines.append(f"  why         {row.get('last_error') or 'no supervisor runs for it (stopped with down, or never brought up)'}")
    lines.append(f"  bring it up with: eval \"$({lifecycle.up_again(host)})\"")  # with the -F it was brought up with
    return lines


def _relay_line(row: dict[str, Any]) -> str:
    death = row.get("last_relay_death") or {}
    restarts = f"restarted {row.get('relay_restarts', 0)} time(s), last at {death.get('at')}: {death.get('cause')}" if death else "not restarted"
    return f"not answering ({row['relay_error']}); {restarts}" if row.get("relay_error") else restarts


def _streams_line(row: dict[str, Any]) -> str:
    if not row.get("resumable"):
        return f"not resumable: {row.get('resumable_reason') or 'unknown'}"
    on_relay = row.get("relay_streams")
    held = f" ({on_relay} on the relay)" if isinstance(on_relay, int) else ""
    way = f", through the stdio transport ({row.get('transport_reason')})" if row.get("transport") == "stdio" else ""
    return f"resumable, {row.get('streams_open', 0)} open{held}, {row.get('streams_resumed', 0)} resumed, {row.get('bytes_replayed', 0)} bytes replayed{way}"


def _back_line(back: dict[str, Any]) -> str:
    """One back tunnel: the gaming PC's port, the laptop's, its state and why, its traffic."""
    state = back.get("state") or "?"
    why = f" ({back['why']})" if back.get("why") else ""
    traffic = (
        f"{back.get('connections_open', 0)} open, {back.get('connections_total', 0)} in all, {back.get('connections_refused', 0)} refused (not this user's), "
        f"{back.get('bytes_to_laptop', 0)} bytes to the laptop, {back.get('bytes_to_remote', 0)} back"
    )
    error = f"; last error: {back['last_error']}" if back.get("last_error") else ""
    return f"{back.get('spec')}: remote {back.get('remote')} -> here {back.get('local')}, {state}{why}, {back.get('mode') or '-'}; {traffic}{error}"


def _wake_line(wake: dict[str, Any] | None) -> str:
    if not wake:
        return "-"
    return f"{wake['kind']} at {wake['at']} ({wake['detail']}): {wake['outcome']}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@main.command()
@click.argument("host", shell_complete=complete_host)
@SHELL_OPTION
@click.option("--unset", "-u", is_flag=True, help="Print the lines that remove the variables instead (HOST need not be up).")
@click.option("--if-up", is_flag=True, help="For rc files: when HOST is not up, print nothing and exit 0, so a new shell's status stays 0.")
@user_errors
@eval_output
def env(host: str, shell: str, unset: bool, if_up: bool) -> None:
    """Print the export lines of HOST, which must be up: eval "$(gt-remote env HOST)"."""
    if unset:
        _print_for_shell(shells.unset_lines(shell), f"gt-remote env {shell_word(host)} --unset", shell)
        return
    try:
        status_ = lifecycle.require_up(host)
    except NotUp:
        if if_up:  # a gaming PC that is off is no error at shell start-up: the prompt stays green
            return
        raise
    lines = shells.export_lines(export_vars(status_["local"], status_["server"]["name"]), shell)
    _print_for_shell(lines, f"gt-remote env {shell_word(host)}", shell)


@main.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("host", required=False, shell_complete=complete_host)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--pick", "pick_host", is_flag=True, help="No HOST: the host 'gt-remote pick' chooses now (every word is COMMAND).")
@click.option("--for", "name", metavar="NAME", help="With --pick: NAME's host, as 'gt-remote pick --for NAME' gives it (and records it).")
@click.pass_context
@user_errors
def exec_(ctx: click.Context, host: str | None, command: tuple[str, ...], pick_host: bool, name: str | None) -> None:
    """Run COMMAND here, on the laptop, with HOST's variables set: gt-remote exec HOST -- ccmux-compat list-sessions."""
    if name is not None and not pick_host:
        raise UsageError("--for names a polecat for --pick", f"add --pick: 'gt-remote exec --pick --for {shell_word(name)} -- COMMAND ...'")
    if command[:1] == ("--",):  # options end at HOST (so COMMAND's own --for is COMMAND's): click keeps the `--` after it
        command = command[1:]
    if pick_host:
        command = (host, *command) if host else command  # no HOST with --pick: the first word is the command's
    if not command or (host is None and not pick_host):  # click's own words, as when both were required
        raise click.UsageError(f"Missing argument '{'COMMAND...' if host or pick_host else 'HOST'}'.", ctx=ctx)
    if pick_host:
        choice = _picked(ctx.obj, [], name, False)
        if choice.refusal is not None:
            raise choice.refusal
        status_ = choice.status
    else:
        assert host is not None
        status_ = lifecycle.require_up(host)
    environment = {**os.environ, **dict(export_vars(status_["local"], status_["server"]["name"]))}
    try:
        os.execvpe(command[0], list(command), environment)
    except FileNotFoundError:
        raise CommandNotFound(f"command not found: {command[0]}", "check its name and your PATH") from None
    except (PermissionError, IsADirectoryError):
        raise CommandNotExecutable(f"{command[0]} is not executable", f"make it executable (chmod +x {shell_word(command[0])}) or run it through its interpreter") from None
    except OSError as exc:
        raise CommandNotExecutable(f"cannot run {command[0]}: {exc.strerror}", "check that it is a program for this machine") from None


def _picked(g: Globals, hosts: list[str], name: str | None, move: bool) -> Any:
    """A pick, said on stderr; no host: each candidate's reason, then the error."""
    from gt_remote.base.config_file import cached_tables
    from gt_remote.base.pool import NoHostToPick
    from gt_remote.commands import pick as picking

    choice = picking.pick(hosts, cached_tables(g.config_path), name, move)
    if isinstance(choice.refusal, NoHostToPick):
        for candidate in choice.candidates:
            tell(f"  {candidate.host}: {candidate.why}")
    if choice.refusal is None:
        say(_pick_words(choice))
    return choice


def _pick_words(choice: Any) -> str:
    host, name = choice.picked.host, choice.name
    if choice.sticky:
        return f"{name} stays on {host}, where it was placed at {choice.placed_at}"
    lead = f"{name} moved from {choice.moved_from} to {host}; its panes on {choice.moved_from} stay there" if choice.moved_from else f"picked {host}" + (f" for {name}" if name else "")
    return f"{lead}: {choice.picked.why} ('gt-remote pick --json' shows every candidate)"


@main.command()
@click.argument("hosts", nargs=-1, metavar="[HOST]...", shell_complete=complete_host)
@click.option("--for", "name", metavar="NAME", help="A polecat's name: record its host, and give NAME that host again while it is up.")
@click.option("--move", is_flag=True, help="With --for: place NAME anew, on another host (its panes on the old one stay there).")
@click.option("--forget", "forget", metavar="NAME", help="Clear NAME's recorded host, and pick nothing.")
@SHELL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the choice, every candidate's figures and why each won or lost, instead of the export lines.")
@click.pass_obj
@user_errors
@eval_output
def pick(g: Globals, hosts: tuple[str, ...], name: str | None, move: bool, forget: str | None, shell: str, as_json: bool) -> None:
    """Print the export lines of the host with the most room now: eval "$(gt-remote pick --for polecat-7)"."""
    if forget is not None:
        if hosts or name or move:
            raise UsageError("--forget only clears a placement: it takes no HOST, --for or --move", f"run 'gt-remote pick --forget {shell_word(forget)}' on its own")
        from gt_remote.commands import pick as picking

        was = picking.forget(forget)
        tell(f"forgot that {forget} was placed on {was}; its panes there stay" if was else f"no placement recorded for {forget}; nothing to forget")
        return
    if move and name is None:
        raise UsageError("--move moves a named polecat", "name it: 'gt-remote pick --for NAME --move'")
    choice = _picked(g, list(hosts), name, move)
    if as_json:
        click.echo(json.dumps(visible_data(choice.to_dict()), indent=2))
    if choice.refusal is not None:
        raise choice.refusal
    if not as_json:
        status_ = choice.status
        lines = shells.export_lines(export_vars(status_["local"], status_["server"]["name"]), shell)
        words = ["gt-remote", "pick", *hosts, *(["--for", name] if name else [])]
        _print_for_shell(lines, " ".join(shell_word(word) if i > 1 else word for i, word in enumerate(words)), shell)


@main.command()
@click.argument("host", required=False, shell_complete=complete_host)
@click.option("--addr", help="Address to Ping (default: HOST's local address, else $GASTOWN_CCMUX_ADDR, else the local ccmux socket).")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the Pong.")
@user_errors
def ping(host: str | None, addr: str | None, timeout: float) -> None:
    """Send a ccmux Ping to HOST's tunnel, or to the address gastown would use, and time the Pong."""
    import asyncio

    from gt_remote.commands import ping as pinging

    if host and addr:
        raise UsageError("name a HOST or pass --addr, not both", f"e.g. 'gt-remote ping {shell_word(host)}'")
    url, rtt = asyncio.run(pinging.ping(host, addr, timeout))
    click.echo(f"Pong from {url} in {rtt * 1000:.2f} ms")


@main.command()
@click.argument("host", shell_complete=complete_host)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines from the end.")
@user_errors
def logs(host: str, follow: bool, lines: int) -> None:
    """Show the supervisor log of HOST."""
    path = HostFiles(host).log
    if not path.exists():
        raise GtRemoteError(f"no log for {host} at {path}", f"bring it up first: gt-remote up {shell_word(host)}")
    with path.open() as handle:
        for line in handle.readlines()[-lines:]:
            click.echo(visible_lines(line), nl=False)
        while follow:
            line = handle.readline()
            if line:
                click.echo(visible_lines(line), nl=False)
            else:
                time.sleep(0.2)


@main.command()
@click.argument("shell", type=click.Choice(SHELLS))
@user_errors
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish); docs/usage.md says where it goes."""
    click.echo(script(main, shell))


def _settings(g: Globals, host: str, overrides: dict[str, Any] | None = None) -> Any:
    from gt_remote.base.config import load_config, resolve  # only the commands that connect read the config

    return resolve(host, load_config(g.config_path), overrides or {}, _ssh_config(g))


@main.command()
@click.argument("host", required=False, shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@user_errors
def doctor(g: Globals, host: str | None, as_json: bool) -> None:
    """Check the whole path: variables, ssh_config, login, server, tunnel, Ping, clients."""
    from gt_remote.commands import doctor as checks

    results = checks.run(_settings(g, host) if host else None)
    if as_json:
        click.echo(json.dumps(visible_data([check.to_dict() for check in results]), indent=2))
    else:
        click.echo(visible_lines(checks.render(results)))
    sys.exit(1 if any(check.status == "fail" for check in results) else 0)


@main.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("paths", nargs=-1)
@click.option("--push", is_flag=True, help="Local to remote (the default).")
@click.option("--pull", is_flag=True, help="Remote to local.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--delete", is_flag=True, help="Delete files on the receiving side that the sender lacks.")
@click.option("--with-git-config", is_flag=True, help="With --pull: also bring the remote's .git/hooks and .git/config (git runs them).")
@click.option("--force", is_flag=True, help="Copy a tree that holds a live database (.dolt, .dolt-data, SQLite with its -wal) anyway.")
@click.pass_obj
@user_errors
def sync(g: Globals, host: str, paths: tuple[str, ...], push: bool, pull: bool, dry_run: bool, delete: bool, with_git_config: bool, force: bool) -> None:
    """rsync PATHS (default: [hosts.HOST] sync) with HOST over the same SSH settings."""
    from gt_remote.commands import sync as syncing

    if push and pull:
        raise UsageError("--push and --pull go opposite ways", f"run 'gt-remote sync {shell_word(host)} --push' and then 'gt-remote sync {shell_word(host)} --pull'")
    syncing.run(_settings(g, host), list(paths), not pull, dry_run, delete, say, with_git_config=with_git_config, force=force)


@main.command()
@click.argument("host")
@click.option("--server-binary", required=True, help="The new server build for the remote.")
@click.option("--install-dir", metavar="DIR", help="Remote directory for the new build (default: the one `up` used).")
@click.option("--yes", is_flag=True, help="Restart without asking (the panes' processes end).")
@user_errors
def upgrade(host: str, server_binary: str, yes: bool, install_dir: str | None) -> None:
    """Switch HOST's running server to another build; restarting it ends the panes' processes."""
    from gt_remote.commands import upgrade as upgrading

    plan = upgrading.plan(host, server_binary, install_dir)
    if not plan.needed:
        say(f"{host} already runs build {plan.digest}; nothing to do")
        return
    say(plan.warning())
    if not yes:
        if not sys.stdin.isatty():
            raise NeedsConfirmation("upgrading ends the panes' processes and there is no terminal to ask on", f"pass --yes: 'gt-remote upgrade {shell_word(host)} --server-binary {shell_word(server_binary)} --yes'")
        if not click.confirm("gt-remote: restart the server now?", default=False, err=True):
            say("upgrade cancelled; nothing changed")
            sys.exit(1)
    server = upgrading.run(plan)
    say(f"{host}: now runs {server.get('path')} {server.get('version') or ''} (pid {server.get('pid')}, build {server.get('build')}); the tunnel stayed up")


@main.command("restart-server")
@click.argument("host")
@click.option("--yes", is_flag=True, help="Restart without asking (the panes' processes end).")
@user_errors
def restart_server(host: str, yes: bool) -> None:
    """Restart HOST's server on purpose, with the back tunnels' variables; its panes' processes end."""
    from gt_remote.commands import upgrade as upgrading

    server = upgrading.restart_plan(host)
    say(f"restarting {server.get('name')} (pid {server.get('pid')}) on {host}: every pane's process there ends")
    if not yes:
        if not sys.stdin.isatty():
            raise NeedsConfirmation("restarting ends the panes' processes and there is no terminal to ask on", f"pass --yes: 'gt-remote restart-server {shell_word(host)} --yes'")
        if not click.confirm("gt-remote: restart the server now?", default=False, err=True):
            say("restart cancelled; nothing changed")
            sys.exit(1)
    new = upgrading.restart(host)
    say(f"{host}: {new.get('name') or 'the server'} runs again (pid {new.get('pid')}), with the back tunnels' variables; the tunnel stayed up")


@main.command()
@click.argument("host", required=False)
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--forget", is_flag=True, help="Clean HOST's remote one last time, then forget it: later cleans no longer connect there.")
@click.pass_obj
@user_errors
def clean(g: Globals, host: str | None, dry_run: bool, forget: bool) -> None:
    """Remove old server builds and stale pid files on every remote gt-remote brought up, and local files of hosts that are not up."""
    from gt_remote.commands import clean as cleaning

    report = cleaning.clean(host, lambda name: _settings(g, name), _ssh_config(g), dry_run, say, forget=forget)
    click.echo("\n".join(visible(line) for line in report.lines))
    sys.exit(1 if report.failed else 0)


@main.group()
def service() -> None:
    """Start a host's tunnel at login (systemd user unit or launchd agent)."""


def _service_file(g: Globals, host: str, platform: str | None) -> Any:
    from gt_remote.commands import service as services

    # Only a --config given here is pinned: the default path is found again at every start.
    config = str(g.config_path.resolve()) if g.config_path.exists() and g.config_path != config_file() else None
    return services.service_file(host, platform or services.default_platform(), _ssh_config(g), config)


PLATFORM = click.option("--platform", type=click.Choice(["systemd", "launchd"]), help="Default: this machine's.")


@service.command("install")
@click.argument("host", shell_complete=complete_host)
@PLATFORM
@click.option("--no-start", is_flag=True, help="Only write the file.")
@click.pass_obj
@user_errors
def service_install(g: Globals, host: str, platform: str | None, no_start: bool) -> None:
    """Write and enable a service running 'gt-remote up HOST --foreground'."""
    from gt_remote.commands import service as services

    file = _service_file(g, host, platform)
    for note in services.install(file, start=not no_start):
        say(note)


@service.command("uninstall")
@click.argument("host", shell_complete=complete_host)
@PLATFORM
@click.pass_obj
@user_errors
def service_uninstall(g: Globals, host: str, platform: str | None) -> None:
    """Stop, disable and remove HOST's service."""
    from gt_remote.commands import service as services

    for note in services.uninstall(_service_file(g, host, platform)):
        say(note)


@service.command("status")
@click.argument("host", shell_complete=complete_host)
@PLATFORM
@click.pass_obj
@user_errors
def service_status(g: Globals, host: str, platform: str | None) -> None:
    """Whether HOST's service is installed and active: exit 0 if active, 3 if not, 1 if not installed."""
    from gt_remote.commands import service as services

    code, text = services.status(_service_file(g, host, platform))
    click.echo(f"{host}: {text}")
    sys.exit(code)


def run() -> None:
    """The installed `gt-remote` command: the CLI, then an exit without the interpreter's teardown.

    Tearing down every imported module costs a short command about 10 ms (measured beside
    `python -c "import click"`), as much as its own work, and `gt-remote env` runs in every new
    shell. Nothing needs it: output is flushed here and atexit handlers (logging's) still run.
    With another thread alive (none in the short commands) the normal exit joins it as usual.
    """
    from gt_remote.commands.completion import COMPLETE_VAR

    try:
        main(prog_name="gt-remote", complete_var=COMPLETE_VAR)
        code: int = 0
    except SystemExit as done:
        if "threading" in sys.modules and sys.modules["threading"].active_count() > 1:
            raise
        code = _exit_status(done.code)
    if not _flushed():
        code = code or 120  # as Python's own exit: output that could not be written
    import atexit

    atexit._run_exitfuncs()
    _flushed()  # what the atexit handlers wrote
    os._exit(code)


def _flushed() -> bool:
    """Flush stdout and stderr, each on its own; False if one of them could not be written
    (the reader went away, as in `gt-remote status | head`, or a full disk). A stream that
    was closed before the command started (`>&-`) is None here, and nothing to flush."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            ok = False
    return ok


def _exit_status(code: object) -> int:
    """sys.exit's argument as the process's status, the way Python's own exit reads it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
