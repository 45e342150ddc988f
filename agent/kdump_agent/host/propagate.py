"""`kdump-agent propagate`: key login to the SSH dump server, set up once by the admin.

What RHEL's `kdumpctl propagate` does, plus the step it leaves to luck: the server's host
key. In order:
1. the key `sshkey` names is created if missing (ed25519, no passphrase: nobody is there
   to type one after a panic);
2. the server's host key is fetched and its fingerprint shown; the admin confirms it
   (compare with `ssh-keygen -lf` on the server) and it is recorded in known_hosts, where
   mkinitrd pins it from. A key that differs from one already recorded is refused;
3. the public key goes into the server's authorized_keys with OpenSSH's `ssh-copy-id`,
   which asks for the account's password itself. kdump-agent never sees the password, and
   ssh-copy-id already knows the server-side details (creating ~/.ssh with the right
   modes, not adding a key twice, SELinux labels); it is told to trust only the host key
   just recorded;
4. a login with the key alone, through the code the capture kernel uses (SshTarget).

paramiko is imported inside the functions that use it: the CLI imports this module
eagerly, and local dumps must not pay for paramiko.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .. import system
from ..config import Config
from ..errors import CommandFailed, KdumpError
from ..targets.sshdest import SshDestination
from .hostpaths import USER_KNOWN_HOSTS
from .netpack import server_of
from .prompt import confirm

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("kdump-agent")

KEYGEN_TIMEOUT = 60.0
HOST_KEY_TIMEOUT = 15.0
LOGIN_TIMEOUT = 30.0


def ssh_destination(config: Config) -> SshDestination:
    """The config's SSH target, or a KdumpError naming the file when it has none."""
    server = server_of(config)
    if not isinstance(server, SshDestination):
        raise KdumpError(f"{config.source}: no ssh target (`ssh user@host`): nothing to propagate")
    return server


def known_hosts_line(name: str, key: paramiko.PKey) -> str:
    """One known_hosts line in OpenSSH's format: `name keytype base64`."""
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def add_known_host(path: str, line: str) -> None:
    """Append line to a known_hosts file, creating it (0600, in a 0700 directory) if needed."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as known_hosts:
        if known_hosts.tell() > 0 and not _ends_with_newline(path):
            known_hosts.write("\n")
        known_hosts.write(line)


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def ensure_key(key_path: str) -> bool:
    """Create the key pair if the private key is missing; True when it was created."""
    if os.path.exists(key_path):
        return False
    os.makedirs(os.path.dirname(key_path) or ".", mode=0o700, exist_ok=True)
    system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kdump-agent@{socket.gethostname()}",
                "-f", key_path], timeout=KEYGEN_TIMEOUT)
    log.info("created the SSH key %s (ed25519, no passphrase)", key_path)
    return True


def ensure_public_key(key_path: str) -> str:
    """KEY.pub, derived from the private key when only that exists."""
    public = key_path + ".pub"
    if not os.path.exists(public):
        result = system.run(["ssh-keygen", "-y", "-f", key_path], timeout=KEYGEN_TIMEOUT)
        with open(public, "wb") as out:
            out.write(result.stdout)
    return public


def fetch_host_key(destination: SshDestination, prefer: Sequence[paramiko.PKey],
                   timeout: float = HOST_KEY_TIMEOUT) -> paramiko.PKey:
    """The host key the server shows, asking first for the types already recorded."""
    import paramiko

    from ..ssh.connection import open_socket
    from ..ssh.hostkeys import host_key_preference

    sock = open_socket(destination.host, destination.port, timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = transport.handshake_timeout = timeout
        options = transport.get_security_options()
        options.key_types = host_key_preference(prefer, options.key_types)
        transport.start_client(timeout=timeout)
        if not (transport.is_active() and transport.initial_kex_done):
            raise KdumpError(f"{destination}: no SSH handshake within {timeout:g} s")
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise KdumpError(f"{destination}: SSH handshake failed: {error}") from error
    finally:
        transport.close()


def run_interactive(argv: Sequence[str]) -> int:
    """Run a program on this terminal (ssh-copy-id asks for a password on it).

    system.run detaches its children from the terminal on purpose; this one must not be.
    """
    log.info("+ %s", " ".join(argv))
    try:
        return subprocess.call(list(argv), env={"PATH": system.CLEAN_PATH, "LANG": "C",
                                                "HOME": os.environ.get("HOME", "/root")})
    except OSError as error:
        raise CommandFailed(list(argv), 127, error.strerror or str(error)) from error


def ssh_copy_id(argv: Sequence[str]) -> int:
    """Run ssh-copy-id on this terminal. It keeps temporary files in ~/.ssh and fails when
    that does not exist, as on a fresh machine: it is made first (0700, as ssh makes it)."""
    os.makedirs(os.path.join(os.path.expanduser("~"), ".ssh"), mode=0o700, exist_ok=True)
    return run_interactive(argv)


def copy_id_argv(destination: SshDestination, public_key: str, known_hosts: str) -> list[str]:
    """ssh-copy-id, trusting only the host key recorded in known_hosts."""
    return ["ssh-copy-id", "-i", public_key, "-p", str(destination.port),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            f"{destination.user}@{destination.host}"]


def server_key_file(key_type: str) -> str:
    """Where OpenSSH's server keeps its public host key of this type."""
    kind = "ecdsa" if key_type.startswith("ecdsa") else key_type.removeprefix("ssh-")
    return f"/etc/ssh/ssh_host_{kind}_key.pub"


def pin_host_key(destination: SshDestination, known_hosts: str, ask: Callable[[str], str]) -> None:
    """Record the server's host key after the admin confirmed its fingerprint."""
    from ..ssh.hostkeys import describe_key, pinned_host_keys

    pinned = pinned_host_keys(known_hosts, destination) if os.path.isfile(known_hosts) else []
    offered = fetch_host_key(destination, pinned)
    name = destination.known_hosts_name
    if any(key.asbytes() == offered.asbytes() for key in pinned):
        log.info("%s's host key %s is already in %s", name, describe_key(offered), known_hosts)
        return
    if pinned:
        raise KdumpError(
            f"HOST KEY MISMATCH: {name} offers {describe_key(offered)}, but {known_hosts} has "
            f"{', '.join(describe_key(key) for key in pinned)} for it. Someone may be in the middle. "
            f"If the server's key really changed: ssh-keygen -R '{name}' -f {known_hosts}, then run "
            "propagate again")
    question = (f"{name} offers the host key {describe_key(offered)}.\nOn the server, `ssh-keygen -lf "
                f"{server_key_file(offered.get_name())}` shows the fingerprint it should have.\n"
                f"Trust this key for kdump dumps and record it in {known_hosts}?")
    if not confirm(question, ask):
        raise KdumpError(f"{name}'s host key was not confirmed: nothing recorded or installed")
    add_known_host(known_hosts, known_hosts_line(name, offered))
    log.info("recorded %s's host key in %s", name, known_hosts)


def check_login(destination: SshDestination, known_hosts: str, timeout: float = LOGIN_TIMEOUT) -> None:
    """Log in with the key alone, as the capture kernel will (SshTarget, pinned host key)."""
    from ..ssh.connection import SshTarget

    with SshTarget.connect(dataclasses.replace(destination, known_hosts_path=known_hosts), timeout):
        pass


def propagate(config: Config, *, known_hosts: str = USER_KNOWN_HOSTS, ask: Callable[[str], str] = input,
              install: Callable[[Sequence[str]], int] = ssh_copy_id) -> SshDestination:
    """Steps 1-4 of the module's docstring; returns the destination now set up."""
    destination = ssh_destination(config)
    ensure_key(destination.key_path)
    public_key = ensure_public_key(destination.key_path)
    pin_host_key(destination, known_hosts, ask)
    argv = copy_id_argv(destination, public_key, known_hosts)
    status = install(argv)
    if status != 0:
        raise KdumpError(f"ssh-copy-id exited {status}: {public_key} is not installed on {destination}")
    check_login(destination, known_hosts)
    log.info("logged in to %s with %s alone: the capture kernel will too", destination, destination.key_path)
    return destination
