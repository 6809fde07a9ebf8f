"""Run a stage's main() so that expected failures are one line, not a traceback.

A stage raises StageError (or ParamsError) for anything the user can fix:
bad params, bad data, a missing model. It is printed as one line on stderr
and the process exits 2. Set MNIST_DEBUG=1 (or pass --debug) for the full
traceback. SIGTERM is turned into KeyboardInterrupt so that an interrupted
stage unwinds through its temp-file cleanup like Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable

from stages.params import ParamsError


class StageError(RuntimeError):
    """A failure with a message meant for the user (file or key, and what is expected)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(main: Callable[[list[str]], None]) -> None:
    """Call main(argv) and map expected failures to exit codes: 2 for errors, 130 when interrupted."""
    argv = sys.argv[1:]
    debug = os.environ.get("MNIST_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main(argv)
    # OSError: unreadable or unwritable files, a full disk; its message names the path.
    except (StageError, ParamsError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was completed", file=sys.stderr)
        sys.exit(130)
