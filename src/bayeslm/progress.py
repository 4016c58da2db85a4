"""Progress bars with ETA on stderr, shown only to a person watching a terminal, and never after `--quiet`."""

from __future__ import annotations

import sys

from tqdm import tqdm

quiet = False  # the command line's --quiet sets it for the whole process


def bar(total: int, desc: str, unit: str = "sample", *, initial: int = 0, leave: bool = False,
        hidden: bool = False) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                disable=hidden or quiet or not sys.stderr.isatty())


def say(message: str):
    """One line on stderr about what is happening (loading, choosing), unless --quiet."""
    if not quiet:
        print(f"bayeslm: {message}", file=sys.stderr)
