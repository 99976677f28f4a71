"""Typed errors. Each carries the cause and the fix; the CLI edge turns them into one line."""

from __future__ import annotations

import shlex


def shell_word(value: object) -> str:
    """One word of a command shown in a hint, quoted for a POSIX shell so a pasted host name
    like `a;b` or `my pc` stays one argument; ordinary names come out unchanged."""
    return shlex.quote(str(value))


class GtRemoteError(Exception):
    """An error a user can act on.

    `transient` says whether trying again later may help (network loss) or not (bad key).
    """

    transient = False
    exit_code = 1

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.cause}; {self.fix}" if self.fix else self.cause

    def to_dict(self) -> dict[str, object]:
        return {"kind": type(self).__name__, "cause": self.cause, "fix": self.fix, "transient": self.transient}


class UsageError(GtRemoteError):
    """Bad input on the command line or in the config file."""

    exit_code = 2


class AddressError(UsageError):
    """A malformed or unsafe GASTOWN_CCMUX_ADDR-style URL."""


class ConfigError(UsageError):
    """The TOML config file is unreadable or holds unknown or ill-typed keys."""


class UnsafeDirectory(GtRemoteError):
    """A private directory (runtime, state, config) or file in one is a symlink, foreign or open to others.

    Never followed, chmod-ed or written through: another local user could have placed it.
    """


class LocalPortInUse(GtRemoteError):
    """The local listener's address is already taken."""


class NotUp(GtRemoteError):
    """A command needs a host that is up, and it is not."""


class SshError(GtRemoteError):
    """Connecting or talking to the SSH server failed."""


class UnknownHost(SshError):
    """The destination name does not resolve."""


class AuthRefused(SshError):
    """The server refused every key we offered: retrying cannot help."""


class KeyNeedsPassphrase(AuthRefused):
    """The identity file is encrypted and no agent holds it: gt-remote runs unattended and never
    asks for a passphrase, so the key was never offered."""


class HostKeyRejected(SshError):
    """The server's host key is unknown or has changed: never bypassed."""


class NoCommonAlgorithm(SshError):
    """The two ends share no cipher, MAC, key exchange or host key type: retrying cannot help
    until one side's settings change."""


class ConnectFailed(SshError):
    """Refused, reset, timed out or lost: the network may come back."""

    transient = True


class RemoteError(GtRemoteError):
    """The remote machine could not run, install or serve the ccmux server."""


class ServerMissing(RemoteError):
    """No server on the remote and no way to install one."""


class InstallFailed(RemoteError):
    """Uploading or installing the server failed; nothing half-written is left."""


class BinaryIncompatible(InstallFailed):
    """The uploaded binary cannot run on the remote (wrong architecture or OS)."""


class NoExecMount(InstallFailed):
    """The remote install directory is on a mount that forbids running programs (noexec)."""


class InstallDirUnsafe(RemoteError):
    """A directory gt-remote keeps code in on the remote is not the login user's own: another
    account could swap a verified build or relay before it runs, as the user."""


def install_dir_unsafe(host: str, directory: str | None, why: str | None) -> InstallDirUnsafe:
    shown = directory or "gt-remote's install dir"
    return InstallDirUnsafe(
        f"{shown} on {host} {why or 'is not private'}, so another account could change the programs gt-remote runs from it; nothing was run from it",
        f"make it yours and private ('chmod go-w {shell_word(shown)}', or remove it if another account made it), "
        "or use a directory you create with 'mkdir -m 700 DIR' there: --install-dir DIR (or install_dir in the config)",
    )


class NonPosixShell(RemoteError):
    """The remote login shell is Windows' cmd.exe or PowerShell, which cannot run gt-remote's scripts."""


class RemoteOutputTooLarge(RemoteError):
    """A remote command printed more than gt-remote reads (a login shell start-up file printing a flood)."""


class RemotePortBusy(RemoteError):
    """The remote port is held by a program that is not a ccmux server."""


class ServerHung(RemoteError):
    """gt-remote's own server accepts connections but does not answer a Ping in time."""

    transient = True


class ServerWithoutTcp(RemoteError):
    """A ccmux server runs on the remote without TCP; only a restart can add it."""


class ServerNotAnswering(RemoteError):
    """The server was started but never answered a Ping on its TCP port."""

    transient = True


class SupervisorTaskEnded(GtRemoteError):
    """A background task of the supervisor ended while it should run: the watchdog's exit."""

    transient = True


class PingFailed(GtRemoteError):
    """A ccmux Ping got no Pong."""

    transient = True


class NothingListens(PingFailed):
    """Nothing accepts connections at the address: no tunnel (or server) is up there."""


class CommandNotFound(GtRemoteError):
    """`exec` was given a program that is not on PATH: exit 127, as env and ssh do."""

    exit_code = 127


class CommandNotExecutable(GtRemoteError):
    """`exec` found the program but cannot run it: exit 126, as env and ssh do."""

    exit_code = 126


class ServerOnOtherPort(RemoteError):
    """gt-remote's server for this remote user already serves another port: only one may own the socket."""


class NotOurServer(RemoteError):
    """The running server was not started by gt-remote, so gt-remote will not stop or replace it."""


class NeedsConfirmation(UsageError):
    """A step that ends the panes' processes, asked for without --yes and without a terminal to ask on."""


class ServiceNotStarted(GtRemoteError):
    """`service install` wrote the unit, but the service manager would not enable or start it."""


class ServerStillRunning(RemoteError):
    """`down --stop-server` stopped the tunnel, but the remote server still runs."""


class Interrupted(GtRemoteError):
    """SIGINT or SIGTERM during a bring-up: it was cancelled and what it started undone."""

    exit_code = 130


class CancelledByDown(GtRemoteError):
    """`gt-remote down` from another shell during a bring-up: cancelled, what it started undone.
    An ordinary failure of this `up` (exit 1), not a signal's 130: nothing interrupted it."""
