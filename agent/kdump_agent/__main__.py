"""Entry point: the one place that turns errors into an exit status."""

from __future__ import annotations

import logging
import os
import sys

from .cli import EXIT_FAILURE, main
from .errors import KdumpError


def os_error_line(error: OSError) -> str:
    """An OSError as the admin reads it: `file: reason` (both files for a rename or link)."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    hint = " (run as root)" if isinstance(error, PermissionError) and os.geteuid() != 0 else ""
    return f"{' -> '.join(names)}: {reason}{hint}"


def run(argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except KdumpError as error:
        logging.getLogger("kdump-agent").error("%s", error)
        return EXIT_FAILURE
    except OSError as error:  # a file the command needed: say which and why, not a traceback
        logging.getLogger("kdump-agent").error("%s", os_error_line(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(run())
