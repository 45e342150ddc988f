"""The one small error hierarchy: library code raises these, only __main__ exits."""

from __future__ import annotations


class KdumpError(Exception):
    """Base of every error the agent reports to the admin as a one-line message."""


class ConfigError(KdumpError):
    """One problem in kdump.conf, located at file and line so the admin can fix it."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


class ConfigErrors(KdumpError):
    """Every problem found in one kdump.conf: they are reported all at once, not one per run."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = errors


class CommandFailed(KdumpError):
    """A program we ran exited non-zero or overran its timeout."""

    def __init__(self, argv: list[str], returncode: int | None, detail: str = "") -> None:
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{argv[0]} {status}{': ' + detail if detail else ''}")
        self.argv = argv
        self.returncode = returncode
        self.detail = detail


class MountError(KdumpError):
    """The dump target could not be found or mounted."""


class TransferError(KdumpError):
    """Writing the dump to its target failed part-way."""
