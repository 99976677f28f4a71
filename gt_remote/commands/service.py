"""Start at login: a systemd user unit (Linux) or a launchd agent (macOS) running
`gt-remote up HOST --foreground`, restarted when it exits."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gt_remote.base.errors import ServiceNotStarted, UsageError, shell_word
from gt_remote.base.paths import host_key

RESTART_SEC = 30  # a final error (refused key) must not become a retry storm
START_TIMEOUT = 300  # connect, upload a large build, start the server, Ping: all before READY=1


@dataclass(frozen=True)
class ServiceFile:
    platform: str  # "systemd" or "launchd"
    path: Path
    label: str
    text: str


def command_line(host: str, ssh_config: str | None, config_path: str | None) -> list[str]:
    """The exact command the service runs: this interpreter, so a pipx venv keeps working."""
    args = [sys.executable, "-m", "gt_remote"]
    if ssh_config:
        args += ["-F", ssh_config]
    if config_path:
        args += ["--config", config_path]
    return args + ["up", host, "--foreground"]


CONTROL_CHARACTERS = {chr(code) for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}


def refuse_control_characters(what: str, value: str) -> None:
    """A newline in a value would end its line and start a directive of its own."""
    bad = sorted({f"\\x{ord(c):02x}" for c in value if c in CONTROL_CHARACTERS})
    if bad:
        raise UsageError(
            f"{what} contains a control character ({', '.join(bad)}), which would break the service file",
            f"remove it from {what} and run 'gt-remote service install' again",
        )


def systemd_escape(text: str) -> str:
    """%% for specifiers: systemd expands %-specifiers in every value, Description= included."""
    return text.replace("%", "%%")


def systemd_quote(arg: str, expands_dollars: bool = True) -> str:
    """Quote one argument for ExecStart: double quotes, escapes, %% for specifiers and $$ for
    the $VAR expansion systemd does on command lines (not in Environment=, which has none)."""
    escaped = systemd_escape(arg.replace("\\", "\\\\").replace('"', '\\"'))
    if expands_dollars:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"' if any(c in arg for c in ' \t"\'\\;$') or not arg else escaped


def systemd_description(host: str) -> str:
    """The host as plain text: %% for specifiers, and a backslash made visible, since one at the
    end of a line would join the next line to this one."""
    return systemd_escape(host.replace("\\", "\\x5c"))


def systemd_unit(host: str, command: list[str], env: dict[str, str]) -> str:
    """Type=notify: the unit counts as started only once `up --foreground` sends READY=1,
    which it does after the end-to-end Ping. No network-online.target: the user manager
    cannot order on it, and a failed connect is retried by Restart= anyway."""
    stop = command[:-2]  # ... up HOST --foreground  ->  ... down HOST
    stop[-1:] = ["down", host]
    environment = "".join(f"Environment={systemd_quote(f'{k}={v}', expands_dollars=False)}\n" for k, v in sorted(env.items()))
    return (
        "# Written by 'gt-remote service install'. Exit 2 means bad input (an option, or a config\n"
        "# or ssh_config file that moved or no longer parses): fix it, then\n"
        "# 'systemctl --user restart' this unit; it is not retried. Other failures are retried.\n"
        "[Unit]\n"
        f"Description=gt-remote tunnel to {systemd_description(host)}\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "NotifyAccess=main\n"
        f"ExecStart={' '.join(systemd_quote(arg) for arg in command)}\n"
        f"ExecStop={' '.join(systemd_quote(arg) for arg in stop)}\n"
        f"{environment}"
        f"TimeoutStartSec={START_TIMEOUT}\n"
        "Restart=on-failure\n"
        f"RestartSec={RESTART_SEC}\n"
        "RestartPreventExitStatus=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(label: str, command: list[str], env: dict[str, str], log: Path) -> str:
    document = {
        "Label": label,
        "ProgramArguments": command,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_SEC,
        "EnvironmentVariables": env,
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    }
    return plistlib.dumps(document).decode()


def service_env() -> dict[str, str]:
    """What the service needs of this shell: where state and config live.

    Not PATH: the command names this interpreter by its absolute path, and a copy of today's
    PATH would go stale; the service manager's own PATH serves a ProxyCommand. Not
    SSH_AUTH_SOCK: the agent's socket changes with every login, so the service takes it
    from the service manager (`systemctl --user import-environment SSH_AUTH_SOCK`; launchd
    sets it for every agent on macOS).
    """
    keep = ("XDG_STATE_HOME", "XDG_CONFIG_HOME")
    return {name: os.environ[name] for name in keep if os.environ.get(name)}


def check_values(host: str, command: list[str], env: dict[str, str]) -> None:
    """Refuse, before anything is written, any value that could end a line of the file.

    PATH is checked too, though not written: the service manager's commands run from it here,
    and a newline in it is a mistake the user should hear about, not one to carry on with."""
    refuse_control_characters("the host name", host)
    for arg in command:
        refuse_control_characters(f"the path {arg!r}", arg)
    for name, value in {**env, "PATH": os.environ.get("PATH", "")}.items():
        refuse_control_characters(name, value)


def service_file(host: str, platform: str, ssh_config: str | None, config_path: str | None) -> ServiceFile:
    command = command_line(host, ssh_config, config_path)
    env = service_env()
    check_values(host, command, env)
    key = host_key(host)
    home = Path.home()
    if platform == "launchd":
        label = f"dev.gt-remote.{key}"
        path = home / "Library" / "LaunchAgents" / f"{label}.plist"
        log = home / "Library" / "Logs" / f"gt-remote-{key}.log"
        return ServiceFile(platform, path, label, launchd_plist(label, command, env, log))
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    label = f"gt-remote-{key}.service"
    return ServiceFile(platform, config_home / "systemd" / "user" / label, label, systemd_unit(host, command, env))


def default_platform() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def _run(args: list[str]) -> tuple[bool, str]:
    if shutil.which(args[0]) is None:
        return False, f"{args[0]} not found"
    result = subprocess.run(args, capture_output=True, text=True)
    return result.returncode == 0, (result.stderr or result.stdout).strip()


def shown(commands: list[list[str]]) -> str:
    """Commands to paste, each word shell-quoted (a home path may hold spaces)."""
    return " && ".join(" ".join(shell_word(word) for word in command) for command in commands)


def activation_commands(service: ServiceFile) -> list[list[str]]:
    if service.platform == "launchd":
        return [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(service.path)]]
    return [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", service.label]]


def deactivation_commands(service: ServiceFile) -> list[list[str]]:
    if service.platform == "launchd":
        return [["launchctl", "bootout", f"gui/{os.getuid()}/{service.label}"]]
    return [["systemctl", "--user", "disable", "--now", service.label], ["systemctl", "--user", "daemon-reload"]]


def install(service: ServiceFile, start: bool) -> list[str]:
    """Write the file (0600); enable and start it when asked. Returns notes for the user.

    A service manager that refuses to enable or start it is an error naming its message: the
    file stays (it is valid), and the same commands in a login session finish the job."""
    service.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = service.path.with_name(f".{service.path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(service.text)
    tmp.replace(service.path)
    notes = [f"wrote {service.path}"]
    manual = shown(activation_commands(service))
    if not start:
        return notes + ["start it with: " + manual]
    for command in activation_commands(service):
        ok, output = _run(command)
        if not ok:
            raise ServiceNotStarted(
                f"wrote {service.path}, but '{shown([command])}' failed: {output or 'no message'}",
                f"run it in your login session: {manual}",
            )
    return notes + [f"enabled and started {service.label}"]


def uninstall(service: ServiceFile) -> list[str]:
    if not service.path.exists():
        return [f"no service for this host at {service.path}"]
    notes = []
    for command in deactivation_commands(service):
        ok, output = _run(command)
        if not ok:
            notes.append(f"note: '{' '.join(command)}' failed ({output})")
    service.path.unlink()
    return notes + [f"removed {service.path}"]


NOT_INSTALLED = 1
NOT_ACTIVE = 3  # as `systemctl is-active` says of an inactive unit


def status(service: ServiceFile) -> tuple[int, str]:
    """An exit code (0 only when the service is installed and running) and what it means."""
    if not service.path.exists():
        return NOT_INSTALLED, f"not installed ({service.path} does not exist)"
    if service.platform == "launchd":
        loaded, output = _run(["launchctl", "print", f"gui/{os.getuid()}/{service.label}"])
        active = loaded and "state = running" in output
        detail = "running" if active else ("loaded, not running" if loaded else output)
    else:
        active, output = _run(["systemctl", "--user", "is-active", service.label])
        detail = output
    where = f"installed at {service.path}; "
    if active:
        return 0, where + f"active ({detail})"
    return NOT_ACTIVE, where + f"not active ({detail or 'unknown'}); start it with: " + shown(activation_commands(service))
