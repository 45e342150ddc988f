"""The SSH target: the dump sent to `user@host` with paramiko, rebuilt there as a ready vmcore.

One job per module:

- hostkeys.py: which host keys are pinned for a server (known_hosts files, `@revoked`,
  OpenSSH's name matching) and the check of the key a server offers; the host side
  (mkinitrd, propagate) reads the same files with it;
- connection.py: SshTarget, one logged-in connection, and the one place where paramiko's
  and the socket's errors become TransferError;
- sftp.py: the dump applied as pipelined, positioned SFTP writes, every reply checked, resumed
  over a new connection when the old one breaks;
- resume.py: how long and how often a broken connection is made anew (no paramiko here);
- shell.py: the fallback for a server without SFTP, the stream kept through `cat`;
- remote.py: the interface those two writers share with the connection.

Every module but resume.py imports paramiko, so this package is imported only where SSH is used (the
steps and the host commands import it inside the functions that need it).
"""

import logging

# paramiko logs its tracebacks at ERROR; the TransferError we raise says it in one line. Without
# a handler of its own, Python's last-resort handler would print them on the console.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
