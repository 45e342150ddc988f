"""Entry point: the one place that turns errors into an exit status."""

from __future__ import annotations

import logging
import sys

from .cli import EXIT_FAILURE, main
from .errors import KdumpError


def run() -> int:
    try:
        return main()
    except KdumpError as error:
        logging.getLogger("kdump-agent").error("%s", error)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(run())
