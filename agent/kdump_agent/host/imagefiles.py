"""What a built capture image holds, read with dracut's lsinitrd (any compression dracut
used): `status` checks that the image carries the storage stack this machine has now."""

from __future__ import annotations

from pathlib import Path

from .. import system

LSINITRD_TIMEOUT = 120.0


def image_file(image: Path, member: str) -> str | None:
    """The text of one file in the image (a path without the leading /), None if absent."""
    result = system.run(["lsinitrd", "-f", member, str(image)], timeout=LSINITRD_TIMEOUT, check=False,
                        echo=False)
    text = result.stdout.decode(errors="replace")
    return text if result.returncode == 0 and text else None


def image_paths(image: Path) -> set[str]:
    """Every path in the image, each with a leading / (`lsinitrd`'s listing, ls -l style)."""
    result = system.run(["lsinitrd", str(image)], timeout=LSINITRD_TIMEOUT, echo=False)
    paths = set()
    for line in result.stdout.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[0][:1] in "-dlcbps":
            paths.add("/" + fields[8])
    return paths
