"""One exception type for mistakes the user can fix, so entrypoints print one line instead of a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or configuration: the message says what to change."""


def exit_on_user_error(main: Callable[[], T]) -> Callable[[], T]:
    """Turn a UserError into `error: <message>` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapped() -> T:
        try:
            return main()
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapped
