"""The one user-facing error type and a "did you mean" helper.

Anything a user can cause (bad names, bad files, bad numbers) raises :class:`UserError`; the
CLI prints it as one line and exits with code 2. Bugs stay ordinary exceptions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """An error caused by input; printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


def suggest(name: str, choices: Iterable[str], what: str = "name") -> str:
    """Return an 'unknown X; did you mean Y? (valid: ...)' message for ``name``."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(
        str(name).lower(), [c.lower() for c in choices], n=1, cutoff=0.5
    )
    lowered = {c.lower(): c for c in choices}
    msg = f"unknown {what} {name!r}"
    if close:
        msg += f"; did you mean {lowered[close[0]]!r}?"
    shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
    return msg + f" (valid: {shown})"


def read_user_text(path: str | Path, what: str = "file", encoding: str = "utf-8") -> str:
    """Read a file the user named; a missing or unreadable one is a one-line UserError."""
    p = Path(path)
    try:
        return p.read_text(encoding=encoding)
    except FileNotFoundError as e:
        raise UserError(f"{p}: no such {what}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read ({e})") from e
