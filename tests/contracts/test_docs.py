"""The docs hold: every command, option and troubleshooting message they name exists, documented
command lines parse, and the setup guide's lines work in a real shell (those start a container)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest

from gt_remote.base.addresses import UnixAddress, parse_address, require_loopback
from gt_remote.base.config import load_config
from gt_remote.base.errors import AddressError
from gt_remote.cli import main
from tests.conftest import Gt
from tests.testbed import REPO, STANDIN, ClientKey, SshHost, free_loopback_port, wait_for

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(file, command line) for every gt-remote invocation inside a code block."""
    found = []
    for path in DOCS:
        in_block = False
        for line in path.read_text().splitlines():
            if line.strip().startswith("```"):
                in_block = not in_block
                continue
            if not in_block:
                continue
            code = line.split(" # ")[0]
            start = code.find("gt-remote ")
            if start < 0:
                continue
            rest = code[start + len("gt-remote "):]
            if code[:start].endswith(("$(", "<(")):  # eval "$(gt-remote up HOST)", source <(gt-remote completion bash)
                rest = rest.rsplit(")", 1)[0]
            rest = re.split(r" (?:>|>>|\||&&|\|\||;) |; | 2>", rest)[0]  # the command, not the shell's redirection or chain
            if rest.strip() and "COMMAND ..." not in rest:  # the synopsis is not a command
                found.append((path.name, rest.strip()))
    return found


def _rest(ctx: click.Context) -> list[str]:
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args with no replacement before 9.0
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def parse(words: list[str]) -> None:
    """Resolve the command chain and parse its options, without running anything."""
    ctx = main.make_context("gt-remote", list(words), resilient_parsing=False)
    command: click.Command = main
    args = _rest(ctx)
    while isinstance(command, click.Group) and args:
        name, sub, args = command.resolve_command(ctx, args)
        assert sub is not None, f"unknown command {name}"
        ctx = sub.make_context(name or "", args, parent=ctx)
        command, args = sub, _rest(ctx)


COMMANDS = documented_commands()


# A new user's shell: no XDG_RUNTIME_DIR (su, cron, a bare ssh session), so fallbacks are used.
PASTE_ENV = {"PATH": os.environ["PATH"], "HOME": "/home/you", "USER": "you", "LC_ALL": "C"}


def shell_words(command: str, env: dict[str, str] = PASTE_ENV) -> list[str]:
    """The arguments a POSIX shell passes for this pasted command: quotes, $VARS and $(...) expanded."""
    result = subprocess.run(["sh", "-c", f"printf '%s\\0' {command}"], env=env, capture_output=True, text=True, check=True)
    return result.stdout.split("\0")[:-1]


# --- the docs' examples, checked for real ------------------------------------------------


def code_blocks(path: Path) -> list[list[str]]:
    """The lines of each fenced code block in a document."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


# --- claims the docs make about the code --------------------------------------------------

SOURCES = "\n".join(path.read_text() for folder in ("gt_remote", "tunnel", "bootstrap") for path in sorted((REPO / folder).glob("**/*.py")))


CLICK_SOURCES = "\n".join((Path(click.__file__).parent / name).read_text() for name in ("exceptions.py", "core.py", "parser.py"))


# Stand-ins the troubleshooting table uses for values only known at run time (a host X, a
# port P, a server's name or version, a platform, another tool's own words).
PLACEHOLDERS = re.compile(
    r"\b(?:[A-Z]{1,2}\d?|HOST|PORT|PATH|PID|STEP|NAME|FILE|DISTRO|LAPTOP-ALIAS|GASTOWN_CCMUX_ADDR)\b|\b\d+(?:\.\d+)?\b|\.\.\.|<[^>]*>|ccmux-server|Linux|x86_64|aarch64|Python 3\.x"
    r"|user@HostName:port|activating|Failed to connect to bus|last wake network|gt-remote (?:[a-z]+ )?--help|systemctl --user enable --now gt-remote-"
    r"|: |; |\(|\)|'|\[|\]"
)


# Messages assembled from parts, so no literal holds the fragment: where they are made.
COMPOSED = {
    "is already up with local": "lifecycle._check_same joins each differing option after 'is already up with'",
    "is already up with resume window": "lifecycle._check_same, as above",
    "gt-remote cannot create": "install.upload_server: 'gt-remote ' and the upload script's 'cannot create DIR'",
    "cmd.exe, not a POSIX shell, so gt-remote cannot run anything there": "remote.py names the shell (Windows' cmd.exe, Windows PowerShell) before ', not a POSIX shell'",
    "the offered build": "ensure._not_the_offered_build: 'the offered {offered}', offered being 'build H2'",
    "is reconnecting": "ping.py: 'the tunnel of X is {state}'",
    "belongs to another user": "paths._user names 'another user (NAME, uid N)' after 'belongs to'",
    "prints text from ~/.bashrc for non-interactive commands, which breaks rsync": "sync.py names the start-up file of the shell it found",
}


def troubleshooting_messages() -> list[str]:
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    return re.findall(r"^\| `([^`]+)`", text, re.M)


def _cli_options(command: click.Command) -> set[str]:
    return {name for param in command.params if isinstance(param, click.Option) for name in (*param.opts, *param.secondary_opts)} | {"--help", "-h"}


def _inline_gt_remote_commands(path: Path) -> list[str]:
    prose = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [span for span in re.findall(r"`([^`\n]+)`", prose) if span.startswith("gt-remote ")]


PROSE_DOCS = [path for path in DOCS if path.name not in ("troubleshooting.md", "benchmarks.md")]  # those quote messages and other tools


def test_troubleshooting_has_a_row_for_each_new_message() -> None:
    rows_text = (REPO / "docs" / "troubleshooting.md").read_text()
    for message in (
        "accepts connections but did not answer a Ping within 3 s: hung or overloaded",
        "accepts connections but nothing answered a ccmux Ping within 3 s",
        "interrupted: undoing what this up started on X",
        "which is still coming up: STEP",
        "installed by 'gt-remote upgrade'",
        "cannot run there",
        "recovered in S s",
        "the relay there (which carries resumable connections) does not pass it on",
        "the tunnel of X is reconnecting",
        "the runtime directory D vanished",
        "resume window 900.0 (asked: 60.0)",
    ):
        assert message in rows_text, message
    usage = (REPO / "docs" / "usage.md").read_text()
    assert "exits\n130" in usage or "exits 130" in usage
    assert "`step`" in usage and "`last_error_past`" in usage


def test_the_docs_show_commands() -> None:
    files = {name for name, _ in COMMANDS}
    assert {"README.md", "usage.md", "setup.md", "gastown.md", "state-sync.md"} <= files
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_documented_command_parses(doc: str, command: str) -> None:
    words = shell_words(command)
    parse(words)
    for option in ("--local", "--addr"):
        if option in words:  # an address that a shell expanded must still follow the rules
            address = parse_address(words[words.index(option) + 1])
            assert not isinstance(address, UnixAddress) or os.path.dirname(address.path) != "/", f"{command}: a variable expanded to nothing"


def test_documented_unix_socket_has_a_fallback() -> None:
    """usage.md's unix:// example works with and without XDG_RUNTIME_DIR, as a private socket."""
    (command,) = [c for d, c in COMMANDS if d == "usage.md" and "--local" in c and "unix://" in c]
    for runtime, directory in ((None, "/home/you/.cache"), ("/run/user/1000", "/run/user/1000")):
        env = {**PASTE_ENV, **({"XDG_RUNTIME_DIR": runtime} if runtime else {})}
        words = shell_words(command, env)
        address = require_loopback(parse_address(words[words.index("--local") + 1]))
        assert address == UnixAddress(f"{directory}/gaming-pc.sock")


def test_documented_ccmux_compat_command_reaches_the_server(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """A `ccmux-compat` stand-in on PATH proves exec hands it CCMUX_ADDR and the arguments."""
    shim = tmp_path / "bin" / "ccmux-compat"
    shim.parent.mkdir()
    shim.write_text(
        f"#!{sys.executable}\n"
        "import asyncio, os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from gt_remote.base.addresses import parse_address\n"
        "from gt_remote.ccmux.wire import ping_address\n"
        "asyncio.run(ping_address(parse_address(os.environ['CCMUX_ADDR'])))\n"
        "print('ccmux-compat stand-in:', os.environ['CCMUX_ADDR'], sys.argv[1:])\n"
    )
    shim.chmod(0o755)
    assert gt.up(ssh_host).returncode == 0
    gt.env["PATH"] = f"{shim.parent}:{gt.env['PATH']}"
    documented = 'gt-remote exec gaming-pc -- ccmux-compat new-session -d -s polecat-1 "claude --resume"'
    assert ("gastown.md", documented.removeprefix("gt-remote").strip()) in COMMANDS
    result = gt(*shlex.split(documented)[1:], ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ccmux-compat stand-in: {gt.local()} ['new-session', '-d', '-s', 'polecat-1', 'claude --resume']"


def test_setup_guide_in_a_real_shell(gt: Gt, ssh_host: SshHost) -> None:
    """docs/setup.md steps 5 to 7 as a new user types them, eval included (the test's own
    local port comes from its config: what is typed is the guide's)."""
    gt.local_in_config("gaming-pc")
    gt_remote = f"{sys.executable} -m gt_remote -F {ssh_host.ssh_config}"
    script = f"""
        set -e
        gt_remote() {{ {gt_remote} "$@"; }}
        gt_remote doctor gaming-pc > doctor-before.txt || true
        eval "$(gt_remote up gaming-pc --server-binary {STANDIN})"
        gt_remote status
        gt_remote ping
        gt_remote doctor gaming-pc
        echo "GASTOWN_CCMUX_ADDR=$GASTOWN_CCMUX_ADDR"
    """
    result = subprocess.run(["sh", "-c", script], env=gt.env, capture_output=True, text=True, cwd=gt.home, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    before = (gt.home / "doctor-before.txt").read_text()
    assert "✓ SSH connection and authentication" in before and "✗ tunnel is up" in before
    assert "gaming-pc: up" in result.stdout and f"Pong from {gt.local()}" in result.stdout
    assert f"✓ ccmux Ping answered: {gt.local()} via GASTOWN_CCMUX_ADDR" in result.stdout
    assert result.stdout.strip().endswith(f"GASTOWN_CCMUX_ADDR={gt.local()}")


def test_gastown_address_examples_are_what_the_parser_says() -> None:
    """The contract's table of examples: each valid value parses, each error is the one shown."""
    table = (REPO / "docs" / "gastown.md").read_text().split("| value | result |\n", 1)[1].split("\n\n", 1)[0]
    examples = re.findall(r"^\| `([^`]+)` \| (.+) \|$", table, re.M)
    assert len(examples) >= 8
    for value, result in examples:
        if result.startswith("error: "):
            with pytest.raises(AddressError) as raised:
                parse_address(value)
            assert result.removeprefix("error: ") in str(raised.value), value
        else:
            parse_address(value)


def test_gastown_preset_loads_and_syncs_each_path_once(tmp_path: Path) -> None:
    (preset,) = [block for block in code_blocks(REPO / "docs" / "gastown.md") if block and block[0].startswith("# ~/.config/gt-remote/config.toml")]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(preset) + "\n")
    paths = [Path(p).expanduser() for p in load_config(config)["gaming-pc"]["sync"]]
    nested = [(inner, outer) for inner in paths for outer in paths if inner != outer and inner.is_relative_to(outer)]
    assert paths and nested == [], f"synced twice: {nested}"


def test_gastown_pool_preset_loads_as_a_pool(tmp_path: Path) -> None:
    """gastown.md's pool: every table is a pool host, with the caps and weight it says."""
    from gt_remote.base.pool import pool_settings

    (preset,) = [block for block in code_blocks(REPO / "docs" / "gastown.md") if block and block[0].startswith("# a pool of three")]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(preset) + "\n")
    hosts = load_config(config)
    settings = {name: pool_settings(name, table) for name, table in hosts.items()}
    assert all(found.pool for found in settings.values()) and len(settings) == 3
    assert settings["tower"].weight == 2.0 and settings["mini-1"].max_sessions == 4


def test_setup_key_only_login_line_works(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """setup.md's way to add a key with password login off, run on the 'gaming PC' as pasted."""
    (line,) = [line.strip() for block in code_blocks(REPO / "docs" / "setup.md") for line in block if "authorized_keys" in line]
    new_key = ClientKey.create(tmp_path)
    ssh_host.sh("rm -rf /home/gamer/.ssh")  # a user who never had a key there
    pasted = f"printf '%s\\n' {shlex.quote(new_key.public)} | ( {line} )"
    ssh_host.sh(f"cd && {pasted}", user="gamer")
    assert ssh_host.sh("stat -c %a /home/gamer/.ssh /home/gamer/.ssh/authorized_keys").split() == ["700", "600"]
    ssh_host.key = new_key
    ssh_host.write_ssh_config()
    found = {check["name"]: check for check in json.loads(gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config).stdout)}
    assert found["SSH connection and authentication"]["detail"].startswith("logged in as gamer, to OpenSSH_")


def test_state_sync_dry_run_example_matches_sync(gt: Gt, ssh_host: SshHost) -> None:
    """state-sync.md's sample output: the same announcement and itemized changes as sync prints."""
    (sample,) = [block for block in code_blocks(REPO / "docs" / "state-sync.md") if block and block[0].startswith("$ gt-remote sync")]
    scratch = gt.home / "scratch"
    scratch.mkdir()
    (scratch / "plan.md").write_text("- [ ] step 1\n")
    os.utime(scratch / "plan.md", (1_700_000_000, 1_700_000_000))  # an old file: its change below is in another second, so rsync always shows the t
    assert gt("sync", "gaming-pc", "--push", str(scratch), ssh_config=ssh_host.ssh_config).returncode == 0
    (scratch / "plan.md").write_text("- [x] step 1\n- [ ] step 2\n")
    (scratch / "notes.txt").write_text("work in progress\n")
    result = gt(*shell_words(sample[0].removeprefix("$ gt-remote "), {**PASTE_ENV, "HOME": str(gt.home)}), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    announced = sample[1].replace("/home/you", str(gt.home))
    assert result.stderr.splitlines() == [announced]
    changes = re.compile(r"^([<>]f|\*deleting) ")  # files; a directory's own line depends on the clock
    assert [line for line in result.stdout.splitlines() if changes.match(line)] == [line for line in sample[2:] if changes.match(line)]
    assert result.stdout.rstrip().endswith("(DRY RUN)") and sample[-1].endswith("(DRY RUN)")


def test_documented_unix_socket_line_in_a_shell_without_xdg_runtime_dir(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """usage.md's unix:// line, pasted into sh with XDG_RUNTIME_DIR unset: up, then a Ping through it."""
    (command,) = [c for d, c in COMMANDS if d == "usage.md" and "--local" in c and "unix://" in c]
    env = {**gt.env, "TMPDIR": str(tmp_path)}  # gt-remote's own runtime dir, private to this test
    env.pop("XDG_RUNTIME_DIR")
    gt_remote = f"{sys.executable} -m gt_remote -F {ssh_host.ssh_config}"
    script = f"""
        set -e
        gt_remote() {{ {gt_remote} "$@"; }}
        eval "$(gt_remote {command} --server-binary {STANDIN})"
        gt_remote ping
        echo "GASTOWN_CCMUX_ADDR=$GASTOWN_CCMUX_ADDR"
    """
    try:
        result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        down = subprocess.run([sys.executable, "-m", "gt_remote", "down", "gaming-pc"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    url = f"unix://{gt.home}/.cache/gaming-pc.sock"
    assert f"Pong from {url}" in result.stdout and result.stdout.strip().endswith(f"GASTOWN_CCMUX_ADDR={url}")
    assert down.returncode == 0 and "gaming-pc: down" in down.stderr


def test_setup_ssh_copy_id_line_adds_the_new_key(gt: Gt, ssh_host: SshHost) -> None:
    """setup.md's ssh-copy-id form, while another key already logs in (ssh_config's IdentityFile)."""
    (line,) = re.findall(r"`(ssh-copy-id [^`]+)`", (REPO / "docs" / "setup.md").read_text())
    (gt.home / ".ssh").mkdir(mode=0o700)  # where ssh-keygen put the new key
    new_key = ClientKey.create(gt.home / ".ssh")
    (gt.home / ".ssh" / "id_ed25519.pub").write_text(new_key.public + "\n")
    words = shell_words(line.replace("you@gaming-pc.lan", "gaming-pc"), {**PASTE_ENV, "HOME": str(gt.home)})
    result = subprocess.run([*words[:-1], "-F", str(ssh_host.ssh_config), words[-1]], capture_output=True, text=True, timeout=60, env=gt.env)
    assert result.returncode == 0, result.stderr
    assert new_key.public in ssh_host.sh("cat /home/gamer/.ssh/authorized_keys")


def test_every_troubleshooting_message_exists_in_the_code() -> None:
    """Each literal part of each documented message is in the source (click's own for usage
    errors), so a message reworded in code cannot leave a stale row behind."""
    messages = troubleshooting_messages()
    assert len(messages) > 80
    haystack = (SOURCES + CLICK_SOURCES).lower()
    missing = []
    for message in messages:
        fragments = [part.strip(" ;:,()'\"") for part in PLACEHOLDERS.split(message)]
        missing += [(message, part) for part in fragments if len(part) >= 10 and part.lower() not in haystack and part not in COMPOSED]
    assert missing == []


@pytest.mark.parametrize("path", PROSE_DOCS, ids=[path.name for path in PROSE_DOCS])
def test_commands_and_options_named_in_prose_exist(path: Path) -> None:
    """`gt-remote CMD --option` written inline (not only in code blocks): the command exists and
    has that option, whether or not the example names every argument."""
    global_options = _cli_options(main)
    for span in _inline_gt_remote_commands(path):
        words = re.split(r" (?:\||2>|>)", span)[0].split()[1:]
        command: click.Command = main
        allowed = set(global_options)
        for word in words:
            if word == "--":  # the rest belongs to the program `exec` runs
                break
            if isinstance(command, click.Group) and not word.startswith("-") and word.replace("-", "_").isidentifier():  # restart-server too
                sub = command.get_command(click.Context(command), word)
                if sub is None and command is main and words.index(word) > 0 and words[words.index(word) - 1] in ("-F", "--config"):
                    continue  # the value of a global option
                assert sub is not None, f"{path.name}: `{span}` names no command {word!r}"
                command = sub
                allowed |= _cli_options(command)
            elif word.startswith("-") and not word.lstrip("-")[:1].isdigit():
                assert word.split("=")[0] in allowed, f"{path.name}: `{span}`: {command.name} has no option {word}"


def test_usage_names_every_option_of_every_command() -> None:
    """usage.md is the reference: each option the CLI takes is written there somewhere, so
    none exists that the docs never mention."""
    usage = (REPO / "docs" / "usage.md").read_text()

    def options(command: click.Command) -> set[str]:
        found = {name for name in _cli_options(command) if name.startswith("--")}
        for sub in command.commands.values() if isinstance(command, click.Group) else []:
            found |= options(sub)
        return found

    undocumented = sorted(name for name in options(main) - {"--help", "--version"} if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", usage))
    assert undocumented == []


def test_wake_and_resume_agree_that_force_keeps_resumable_connections(gt: Gt, ssh_host: SshHost) -> None:
    """wake.md: after `reconnect --force`, connections through the tunnel continue (resume.md's
    promise for any reconnect); a resumable client is never reset by it."""

    from tests.e2e.helpers import LongClient, row, wait_recovered

    wake = (REPO / "docs" / "wake.md").read_text()
    assert "they pause and continue where they were" in wake and "same reset" not in wake
    with socket.socket() as spare:  # a local port of its own: 9999 may be another test's
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    up = gt.up(ssh_host, "--keepalive", "1", "--local", f"tcp://127.0.0.1:{port}")
    assert up.returncode == 0, up.stderr
    assert row(gt)["resumable"] is True
    client = LongClient(port)
    try:
        client.wait_rounds(5)
        for round_ in (1, 2, 3):
            forced = gt("reconnect", "gaming-pc", "--force")
            assert forced.returncode == 0 and "dropped the link on request" in forced.stderr, forced.stderr
            wait_recovered(gt, round_)
            client.wait_rounds(10)
        assert client.error is None and row(gt)["streams_resumed"] >= 3
    finally:
        client.close()



def documented_status_fields() -> tuple[dict[str, str], set[str]]:
    """usage.md's `status --json` table: each field (nested ones dotted, `server.pid`,
    `back[].spec`) with its meaning; and the fields it says a `down` row has."""
    usage = (REPO / "docs" / "usage.md").read_text()
    table = usage.split("| field | type | meaning |\n", 1)[1].split("\n\n", 1)[0]
    fields = {name: meaning for name, meaning in re.findall(r"^\| `([^`]+)` \| [^|]+ \| (.*) \|$", table, re.M)}
    down = usage.split("A host whose supervisor is gone shows as `down`, with only ", 1)[1].split(":", 1)[0]
    return fields, set(re.findall(r"`([^`]+)`", down))


def undocumented_keys(row: dict[str, object], fields: dict[str, str]) -> list[str]:
    """Each key of a status row the table does not name, and each named top-level field the row
    lacks; one level down, an object's keys are named as rows (`server.pid`) or in its meaning."""
    top = {name for name in fields if "." not in name}
    found = [f"{key} (not documented)" for key in sorted(set(row) - top)] + [f"{name} (documented, not in status)" for name in sorted(top - set(row))]
    for key, value in row.items():
        inner = value[0] if key == "back" and isinstance(value, list) and value else value
        if not isinstance(inner, dict) or key in ("server_env_lacking",):  # variable names, not fields
            continue
        prefix = f"{key}[]." if key == "back" else f"{key}."
        rows = {name.removeprefix(prefix) for name in fields if name.startswith(prefix)}
        if rows:
            found += [f"{prefix}{sub} (not documented)" for sub in sorted(set(inner) - rows)]
            found += [f"{prefix}{sub} (documented, not in status)" for sub in sorted(rows - set(inner))]
        else:
            found += [f"{prefix}{sub} (not named in the meaning of {key})" for sub in inner if f"`{sub}`" not in fields.get(key, "")]
    return found


def test_every_status_field_is_documented(gt: Gt, ssh_host: SshHost) -> None:
    """A real `up` with a back tunnel, a server that died and came back, a `reconnect`: every key
    of `status --json` (and of `server`, each `back` entry and the other objects) is a row of
    usage.md's table, and each row is a key; then `down`, whose row has just the listed fields."""
    fields, down_fields = documented_status_fields()
    nothing_there = free_loopback_port()  # the laptop's side of the back tunnel: up only warns
    up = gt.up(ssh_host, "--keepalive", "1", "--back", f"dolt:3307:127.0.0.1:{nothing_there}", "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert up.returncode == 0, up.stderr
    [row] = gt.status("gaming-pc")
    ssh_host.kill(row["server"]["pid"])  # fills last_server_restart
    wait_for(lambda: gt.status("gaming-pc")[0]["server_restarts"] == 1, 30, "the server to be started again")
    assert gt("reconnect", "gaming-pc").returncode == 0  # fills last_wake
    wait_for(lambda: gt.status("gaming-pc")[0]["load"], 30, "the load figures of a health check on the new link")
    [row] = gt.status("gaming-pc")
    assert row["back"] and row["last_server_restart"] and row["last_wake"] and row["load"], row
    assert undocumented_keys(row, fields) == []
    assert gt("down", "gaming-pc").returncode == 0
    [down] = gt.status("gaming-pc")
    assert down["state"] == "down" and set(down) == down_fields, sorted(set(down) ^ down_fields)


def _completion_line(shell: str) -> str:
    """usage.md's line that loads the completion in `shell`'s start-up file."""
    section = (REPO / "docs" / "usage.md").read_text().split("## Shell completion", 1)[1].split("\n## ", 1)[0]
    (line,) = [line for block in re.findall(rf"```{shell}\n(.*?)```", section, re.S) for line in block.splitlines() if f"completion {shell}" in line]
    return line


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_line_works_in_a_bare_shell(gt: Gt, shell: str) -> None:
    """The documented start-up line, in a real shell with no start-up files of its own, so no
    bash-completion package (bash), only compinit (zsh): Tab on `gt-remote sta` offers status."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here")
    line = _completion_line(shell)
    bin_dir = gt.home / "bin"  # the scripts run `gt-remote` by name, as an installed command
    bin_dir.mkdir()
    (bin_dir / "gt-remote").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gt_remote \"$@\"\n")
    (bin_dir / "gt-remote").chmod(0o755)
    drivers = {
        "bash": ["bash", "--norc", "--noprofile", "-c", f"{line}\ntype _init_completion >/dev/null 2>&1 && echo 'bash-completion is loaded'\n"
                 "COMP_WORDS=(gt-remote sta); COMP_CWORD=1; _gt_remote_completion gt-remote; printf '%s\\n' \"${COMPREPLY[@]}\""],
        "zsh": ["zsh", "-f", "-c", f"autoload -Uz compinit && compinit -u -D\n{line}\nprint -r -- ${{_comps[gt-remote]}}"],
        "fish": ["fish", "--no-config", "-c", f"{line}\ncomplete -C'gt-remote sta'"],
    }
    env = {**gt.env, "PATH": f"{bin_dir}:{gt.env['PATH']}"}
    result = subprocess.run(drivers[shell], env=env, capture_output=True, text=True, timeout=60, cwd=gt.home)
    assert result.returncode == 0, result.stderr
    expected = {"bash": ["status"], "zsh": ["_gt_remote_completion"], "fish": ["status"]}[shell]
    assert [word.split("\t")[0] for word in result.stdout.splitlines()] == expected, result.stdout + result.stderr


def test_fish_snippets_name_the_fish_shell() -> None:
    """`gt-remote up|env ... | source` is fish: each such line says `--shell fish`, so it works
    whatever `$SHELL` says (the default follows `$SHELL`, which is often bash under fish)."""
    found = [(path.name, line) for path in DOCS for line in re.findall(r"gt-remote (?:up|env) [^`\n|]*\| source", path.read_text())]
    assert len(found) >= 4, found
    assert [(name, line) for name, line in found if "--shell fish" not in line] == []
