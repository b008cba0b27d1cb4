"""One exception type for mistakes the user can fix, so entrypoints print one line instead of a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request after a checkpoint; run again with --resume


class UserError(Exception):
    """Bad input or configuration: the message says what to change."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 arrived; the run saved a checkpoint and stops."""


def exit_on_user_error(main: Callable[[], T]) -> Callable[[], T]:
    """Turn a UserError into `error: <message>` on stderr and exit status 2, a preemption into status 75."""

    @functools.wraps(main)
    def wrapped() -> T:
        try:
            return main()
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except Preempted as stop:
            print(f"preempted: {stop}", file=sys.stderr, flush=True)
            raise SystemExit(PREEMPTED_EXIT) from None

    return wrapped
