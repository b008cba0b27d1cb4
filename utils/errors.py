"""The two kinds of failure, kept apart, so that entrypoints print one line instead of a traceback and a launcher or
scheduler can tell from the exit status what happened:

- UserError (exit 2): bad input or configuration; the message says what to change, and nothing was started or lost.
- RunError (exit 3): a fault at run time (a non-finite loss or gradient, a full disk, a failed save); the message
  names the last good checkpoint where there is one.
- Preempted (exit 75): stopped on request after saving a checkpoint; run again with --resume.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

USER_ERROR_EXIT = 2  # as argparse exits on a bad flag
RUN_ERROR_EXIT = 3
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request after a checkpoint; run again with --resume


class UserError(Exception):
    """Bad input or configuration: the message says what to change."""


class RunError(Exception):
    """A fault while running, not in what the user gave: the message says what failed and what was kept."""


class BatchFailed(RunError):
    """A fault before a batch's first update (a reward server that stopped answering): the loop saves a checkpoint at
    the batch's start, so that --resume runs the batch again."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 arrived; the run saved a checkpoint and stops."""


def exit_on_error(main: Callable[[], T]) -> Callable[[], T]:
    """Turn each kind of failure into one `error:` (or `preempted:`) line on stderr and its own exit status."""

    @functools.wraps(main)
    def wrapped() -> T:
        try:
            return main()
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(USER_ERROR_EXIT) from None
        except RunError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(RUN_ERROR_EXIT) from None
        except Preempted as stop:
            print(f"preempted: {stop}", file=sys.stderr, flush=True)
            raise SystemExit(PREEMPTED_EXIT) from None

    return wrapped
