"""One SSH connection to the remote, configured through ssh_config, with host keys verified.

Failures become typed errors that say whether retrying can help: a refused key or a changed
host key is final; refused, reset, timed-out or lost connections are transient.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.encryption import get_default_encryption_algs
from asyncssh.packet import String

from gt_remote.base.errors import AuthRefused, ConnectFailed, GtRemoteError, HostKeyRejected, KeyNeedsPassphrase, NoCommonAlgorithm, SshError, UnknownHost, shell_word
from gt_remote.base.sanitize import ascii_int
from gt_remote.tunnel.ciphers import aes_in_hardware, preferred_ciphers

KEEPALIVE_COUNT_MAX = 3
DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

steps = logging.getLogger("gt_remote.steps")  # shown with -v (gt_remote.base.progress)


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect. `destination` is an alias, `user@host[:port]` or `ssh://...`."""

    destination: str
    ssh_config: str | None = None
    keepalive: float = 5.0
    connect_timeout: float = 10.0

    def parts(self) -> tuple[str | None, str, int | None]:
        """(user, host, port) as written; unset parts come from ssh_config."""
        text = self.destination.removeprefix("ssh://")
        user, at, hostport = text.rpartition("@")
        host, port = hostport, None
        if hostport.startswith("["):
            inner, _, tail = hostport[1:].partition("]")
            host, port = inner, ascii_int(tail[1:], 5) if tail.startswith(":") else None
        elif self.destination.startswith("ssh://") and hostport.count(":") == 1:
            name, _, port_text = hostport.partition(":")
            if ascii_int(port_text, 5) is not None:
                host, port = name, ascii_int(port_text, 5)
        return (user if at else None), host, port


class _LossRecorder(asyncssh.SSHClient):
    """Remembers why the connection ended, so status can say it."""

    def __init__(self) -> None:
        self.lost_reason: str | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_reason = str(exc) if exc else "connection closed by the server"


@dataclass(frozen=True)
class Resolved:
    """What ssh_config made of a destination: shown by `doctor` and by -v."""

    ssh_config: str | None
    user: str | None
    hostname: str
    port: int
    identity_files: list[str] = field(default_factory=list)
    known_hosts: list[str] = field(default_factory=list)
    connect_timeout: float | None = None

    def describe(self) -> str:
        timeout = f"; connect timeout {self.connect_timeout:g} s" if self.connect_timeout else ""
        return (
            f"{self.user or '?'}@{self.hostname}:{self.port} (ssh_config {self.ssh_config or 'none'}; "
            f"keys {', '.join(self.identity_files) or 'none found'}; known_hosts {', '.join(self.known_hosts) or 'none'}{timeout})"
        )


def resolve(target: SshTarget) -> Resolved | None:
    """The user, HostName, port, keys and known_hosts asyncssh will use; None if unreadable.

    The same resolution `connect` uses (ssh_config from -F, else ~/.ssh/config), so doctor
    and -v show the port and keys the connection really takes, a wrong Port included.
    """
    user, host, port = target.parts()
    options = _resolved_options(host, _options(target, user, port))
    if options is None:
        return None
    config = options.config
    default = os.path.expanduser(DEFAULT_SSH_CONFIG)
    config_file = target.ssh_config or (DEFAULT_SSH_CONFIG if os.access(default, os.R_OK) else None)
    configured: list[object] = list(config.get("IdentityFile", None) or [])  # type: ignore[call-overload]
    keys = [_path_text(path) for path in configured]
    if not keys:
        keys = [_path_text(getattr(key, "_filename", None) or key.get_comment() or "?") for key in options.client_keys or []]
    known = options.known_hosts if isinstance(options.known_hosts, list) and options.known_hosts else [DEFAULT_KNOWN_HOSTS]
    known_files = [_path_text(path) for path in known]
    return Resolved(config_file, options.username, str(options.host), int(options.port), keys, known_files, effective_connect_timeout(target, config))


def _path_text(value: object) -> str:
    """A key's file name as a path, whether asyncssh holds it as str, bytes or Path."""
    return os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)


def effective_connect_timeout(target: SshTarget, config: object) -> float:
    """ssh_config's ConnectTimeout wins over our default, as it does for ssh itself."""
    configured = getattr(config, "get", lambda *_: None)("ConnectTimeout", None)
    try:
        seconds = float(configured) if configured is not None else 0.0
    except (TypeError, ValueError):
        seconds = 0.0
    return seconds if seconds > 0 else target.connect_timeout


def _options(target: SshTarget, user: str | None, port: int | None) -> dict[str, object]:
    options: dict[str, object] = {
        "keepalive_interval": target.keepalive,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        "connect_timeout": target.connect_timeout,
        "login_timeout": target.connect_timeout,
        "client_factory": _LossRecorder,
    }
    # () is asyncssh.connect's own default, ~/.ssh/config if readable; the options class alone
    # would read no file at all, and doctor would show root@alias:22.
    options["config"] = [target.ssh_config] if target.ssh_config is not None else ()
    if user:
        options["username"] = user
    if port:
        options["port"] = port
    return options


async def connect(target: SshTarget) -> asyncssh.SSHClientConnection:
    """Connect and authenticate; raise a typed error naming the cause and the fix."""
    user, host, port = target.parts()
    options = _options(target, user, port)
    resolved = _resolved_options(host, options)
    if resolved is not None:
        options["connect_timeout"] = options["login_timeout"] = effective_connect_timeout(target, resolved.config)
        ciphers = preferred_ciphers(get_default_encryption_algs(), resolved.config.get("Ciphers", None), aes_in_hardware())
        if ciphers is not None:  # only where ssh_config has no Ciphers line: the user's choice wins
            options["encryption_algs"] = ciphers
    if resolved is not None and resolved.known_hosts is None:
        raise HostKeyRejected(
            f"the ssh_config for {target.destination} turns host key checking off (UserKnownHostsFile none)",
            "gt-remote always verifies host keys: remove that line, or point UserKnownHostsFile at a known_hosts file",
        )
    if steps.isEnabledFor(logging.DEBUG):
        described = resolve(target)
        steps.debug("ssh: connecting to %s as %s", target.destination, described.describe() if described else "(ssh_config unreadable)")
    try:
        conn = await asyncssh.connect(host, **options)  # type: ignore[arg-type]
        _watch_receipts(conn)
        _send_chaff_only_for_cbc(conn)
        steps.debug("ssh: host key verified; authenticated as %s; cipher %s", conn.get_extra_info("username"), conn.get_extra_info("send_cipher"))
        return conn
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _host_key_error(target.destination, resolved, target.ssh_config) from exc
    except asyncssh.PermissionDenied as exc:
        locked = await locked_keys(resolved) if resolved is not None else []
        raise (needs_passphrase(target.destination, locked) if locked else classify(exc, target.destination)) from exc
    except Exception as exc:  # every failure leaves here typed
        raise classify(exc, target.destination) from exc


# --- keys that need their passphrase ------------------------------------------------------

DEFAULT_KEY_NAMES = ("id_ed25519_sk", "id_ecdsa_sk", "id_ed448", "id_ed25519", "id_ecdsa", "id_rsa", "id_dsa")  # asyncssh's, as ssh's


async def locked_keys(options: asyncssh.SSHClientConnectionOptions) -> list[str]:
    """The identity files in use (ssh_config's IdentityFile, else the default ~/.ssh/id_*) that
    are encrypted and that no agent offers. asyncssh leaves such a key out without a word
    (gt-remote never prompts), so the server's refusal alone would blame authorized_keys."""
    configured: list[object] = list(options.config.get("IdentityFile", None) or [])  # type: ignore[call-overload]
    files = [os.path.expanduser(_path_text(path)) for path in configured] or [os.path.expanduser(f"~/.ssh/{name}") for name in DEFAULT_KEY_NAMES]
    locked = [file for file in files if _encrypted(file)]
    if not locked:
        return []
    offered = await _agent_keys(getattr(options, "agent_path", None) or "")
    return [file for file in locked if _public_blob(file) not in offered]


def _encrypted(file: str) -> bool:
    """Whether the private key in `file` needs a passphrase to load."""
    try:
        asyncssh.read_private_key(file)
    except asyncssh.KeyImportError as exc:
        return str(exc).startswith("Passphrase")
    except (OSError, ValueError):
        return False  # missing or unreadable: not this error's business
    return False


async def _agent_keys(path: str) -> set[bytes]:
    """The public keys the agent at `path` holds; none without an agent, or one that fails."""
    if not path:
        return set()
    try:
        async with asyncssh.connect_agent(path) as agent:
            return {key.key_public_data for key in await agent.get_keys()}
    except (OSError, ValueError, asyncssh.Error):
        return set()


def _public_blob(file: str) -> bytes | None:
    """The public half of an encrypted key, without its passphrase: from FILE.pub, else from the
    unencrypted header of OpenSSH's own format; None if neither says."""
    try:
        return bytes(asyncssh.read_public_key(file + ".pub").public_data)
    except (OSError, ValueError, asyncssh.KeyImportError):
        pass
    try:
        import base64
        import struct

        text = Path(file).read_text()
        body = base64.b64decode("".join(line for line in text.splitlines() if line and not line.startswith("-----")))
        magic = b"openssh-key-v1\0"
        if not body.startswith(magic):
            return None
        at = len(magic)
        for _ in range(3):  # cipher name, KDF name, KDF options
            (size,) = struct.unpack_from(">I", body, at)
            at += 4 + size
        at += 4  # the number of keys
        (size,) = struct.unpack_from(">I", body, at)
        return body[at + 4 : at + 4 + size]
    except (OSError, ValueError, struct.error):
        return None


def needs_passphrase(destination: str, locked: list[str]) -> KeyNeedsPassphrase:
    """The refusal said as what it is: a key that was never offered, and the one command that offers it."""
    named = " and ".join(_home_short(file) for file in locked)
    add = f"'ssh-add {' '.join(_home_word(file) for file in locked)}' (and make sure SSH_AUTH_SOCK reaches gt-remote)"
    if len(locked) == 1:
        return KeyNeedsPassphrase(
            f"{destination} refused authentication: the key {named} needs its passphrase, and gt-remote runs unattended and never prompts", f"add it to your agent with {add}"
        )
    return KeyNeedsPassphrase(
        f"{destination} refused authentication: the keys {named} need their passphrases, and gt-remote runs unattended and never prompts", f"add them to your agent with {add}"
    )


def _home_short(file: str) -> str:
    home = os.path.expanduser("~")
    return "~" + file[len(home):] if file.startswith(home + "/") else file


def _home_word(file: str) -> str:
    """`file` as one shell word, ~/... under the home (a quoted ~ would not expand)."""
    short = _home_short(file)
    return "~/" + shell_word(short[2:]) if short.startswith("~/") else shell_word(file)


def _resolved_options(host: str, options: dict[str, object]) -> asyncssh.SSHClientConnectionOptions | None:
    """The settings asyncssh will use for this host, after ssh_config; None if unreadable."""
    try:
        return asyncssh.SSHClientConnectionOptions(host=host, **options)  # type: ignore[arg-type]
    except (ValueError, OSError, asyncssh.Error):
        return None  # connect() reports it, typed


def _host_key_error(destination: str, options: asyncssh.SSHClientConnectionOptions | None, ssh_config: str | None = None) -> HostKeyRejected:
    """Unknown and changed keys need different fixes: tell them apart by the known_hosts files.
    The commands it hands over use the same ssh_config (-F) and known_hosts file as gt-remote."""
    ssh = f"ssh{f' -F {shell_word(ssh_config)}' if ssh_config else ''} {shell_word(destination)}"
    pinned = _pinned_key(options) if options is not None else None
    if pinned is not None:
        file, name = pinned
        elsewhere = f" -f {shell_word(file)}" if file != os.path.expanduser(DEFAULT_KNOWN_HOSTS) else ""  # ssh-keygen's own default otherwise
        return HostKeyRejected(
            f"the host key of {destination} has CHANGED since it was saved in known_hosts: the host was reinstalled, or someone is intercepting the connection",
            f"if you know it was reinstalled, remove the old key with 'ssh-keygen -R {_double_quoted(name)}{elsewhere}' and connect once with '{ssh}' to check and save the new one",
        )
    return HostKeyRejected(
        f"the host key of {destination} is not in known_hosts yet",
        f"connect once with '{ssh}', check the fingerprint and accept it; gt-remote never accepts an unknown key by itself",
    )


def _double_quoted(word: str) -> str:
    """`[host]:port` as "[host]:port": one word in sh, bash and zsh (whose unmatched glob is an
    error), readable inside a hint that is itself in single quotes; anything odder, shell-quoted."""
    if shell_word(word) == word:
        return word
    return f'"{word}"' if not any(char in word for char in '"$`\\!') else shell_word(word)


def _pinned_key(options: asyncssh.SSHClientConnectionOptions) -> tuple[str, str] | None:
    """(the known_hosts file, the name in it) of a key saved for this host, if any: what
    `ssh-keygen -R NAME -f FILE` removes (`[host]:port` off port 22, as ssh saves it)."""
    files = options.known_hosts if isinstance(options.known_hosts, list) and options.known_hosts else [DEFAULT_KNOWN_HOSTS]
    host = str(getattr(options, "host_key_alias", None) or getattr(options, "host", None) or "")
    port = getattr(options, "port", 22)
    for path in files:
        file = os.path.expanduser(_path_text(path))
        try:
            known = asyncssh.read_known_hosts(file)
            if known.match(host, "", port)[0]:
                return file, host if port == 22 else f"[{host}]:{port}"
        except (OSError, ValueError, asyncssh.Error):
            continue
    return None


class Receipts:
    """When a connection last received bytes, any bytes: proof that the peer is alive.

    A keepalive reply can wait seconds behind a bulk transfer on a slow uplink, while the
    peer's data and window adjustments keep arriving. Liveness counts those too, so a busy
    link never looks dead (asyncssh's own keepalive counter is reset by them as well).
    """

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.total = 0

    def note(self, count: int) -> None:
        self.last = time.monotonic()
        self.total += count

    def quiet_since(self, start: float) -> float:
        """Seconds without a received byte, counted from `start` at the earliest."""
        return time.monotonic() - max(start, self.last)


_receipts: weakref.WeakKeyDictionary[asyncssh.SSHClientConnection, Receipts] = weakref.WeakKeyDictionary()


def receipts(conn: asyncssh.SSHClientConnection) -> Receipts | None:
    """The receipts of a connection made by connect(); None for one made elsewhere."""
    return _receipts.get(conn)


def _watch_receipts(conn: asyncssh.SSHClientConnection) -> None:
    """Count every byte the transport hands the connection, before asyncssh parses it.

    asyncssh has no hook for this; its transport calls the connection's data_received, so an
    instance attribute in front of the method sees every read. Its keepalive counter counts
    unanswered keepalives in a row; bytes arriving prove the peer alive, so they reset it too.
    """
    seen = Receipts()
    _receipts[conn] = seen
    parse = conn.data_received

    def data_received(data: bytes, datatype: Any = None) -> None:
        seen.note(len(data))
        if getattr(conn, "_keepalive_count", 0):
            conn._keepalive_count = 0
        parse(data, datatype)

    setattr(conn, "data_received", data_received)  # noqa: B010 - an instance attribute in front of the method


EMPTY_STRING = String(b"")  # the ignore packet's payload as asyncssh sends it


def chaff_protects(cipher: str) -> bool:
    """Whether an empty SSH_MSG_IGNORE before each packet protects anything with `cipher`.

    It is RFC 4251 §9.3.1's countermeasure for CBC mode, whose chosen-plaintext attack relies
    on each packet's IV being the last ciphertext block before it. Counter modes and the AEAD
    ciphers (chacha20-poly1305, AES-GCM: OpenSSH's defaults) have no such IV to predict."""
    return "cbc" in cipher.lower()


def _send_chaff_only_for_cbc(conn: asyncssh.SSHClientConnection) -> None:
    """Leave out asyncssh's empty SSH_MSG_IGNORE before every packet, except under CBC.

    asyncssh sends one before each packet once keys are in place, whatever the cipher. With
    a non-CBC cipher it protects nothing, and it doubles the cost of each small message: one
    more packet encrypted and sent here (with its own random padding and send call), one more
    for sshd to read and decrypt. An interactive pane is mostly small messages. asyncssh has no
    setting for it; it sends the packet through its own send_packet, so an instance attribute
    in front of the method sees it (as _watch_receipts does for data_received).
    """
    send_packet = conn.send_packet

    def send_packet_without_chaff(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if pkttype == MSG_IGNORE and args == (EMPTY_STRING,) and not chaff_protects(conn.get_extra_info("send_cipher") or "cbc"):
            return
        send_packet(pkttype, *args, **kwargs)

    setattr(conn, "send_packet", send_packet_without_chaff)  # noqa: B010 - an instance attribute in front of the method


def lost_reason(conn: asyncssh.SSHClientConnection) -> str:
    """`connection lost: <why>`, naming the loss once whatever words the cause uses."""
    client = conn.get_owner()
    reason = str(getattr(client, "lost_reason", None) or "").strip().rstrip(".")
    if not reason or reason.lower() == "connection lost":
        return "connection lost"
    if reason.lower().startswith("connection "):
        return reason[:1].lower() + reason[1:]
    return f"connection lost: {reason}"


def classify(exc: BaseException, destination: str) -> GtRemoteError:
    """Map an asyncssh/OS failure to one of our errors, with a fix a user can apply."""
    if isinstance(exc, GtRemoteError):
        return exc
    if isinstance(exc, socket.gaierror):
        return UnknownHost(
            f"cannot resolve host {destination!r} ({exc.strerror})",
            "check the name, or add a 'Host' entry with a 'HostName' to your ssh_config (-F FILE)",
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthRefused(
            f"{destination} refused authentication ({exc.reason})",
            "add your public key to the remote ~/.ssh/authorized_keys, or set IdentityFile in ssh_config",
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return _host_key_error(destination, None)
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return NoCommonAlgorithm(
            f"{destination} and this machine share no algorithm: {exc.reason}",
            "allow one that both support with Ciphers, MACs, KexAlgorithms or HostKeyAlgorithms in your ssh_config for this host, "
            "or in the remote's sshd_config",
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"{destination} refused the connection", "is sshd running there, and is the port right?")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return ConnectFailed(f"connecting to {destination} timed out", "is the host awake and reachable?")
    if isinstance(exc, (asyncssh.Error, OSError, EOFError)):
        return ConnectFailed(f"cannot connect to {destination}: {exc}", "check the network and that sshd is running")
    if isinstance(exc, ValueError):
        return SshError(f"bad ssh settings for {destination}: {exc}", "check the ssh_config entry and the destination")
    return ConnectFailed(f"cannot connect to {destination}: {exc!r}", "check the network and that sshd is running")
