"""Every command's front door: its arguments, then its main(), with expected failures as one line.

Each command (`python -m stages.NAME`) builds its parser with `parser()`: its
docstring, what it reads and writes, its options. `run()` parses the command
line before anything else happens, so `--help` (exit 0) and an unknown option
or stray argument (one line, exit 2) touch no file. Then a stage raises
StageError or ParamsError (stages/errors.py) for anything the user can fix:
bad params, bad data, a missing model. It is printed as one line on stderr and
the process exits 2. Set MNIST_DEBUG=1 (or pass --debug) for the full
traceback. SIGTERM is turned into KeyboardInterrupt so that an interrupted
stage unwinds through its temp-file cleanup like Ctrl-C does.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from stages.errors import ParamsError, StageError


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# glibc's mallopt parameters (malloc.h), and what this process sets them to, in bytes
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOPT = {_M_MMAP_THRESHOLD: 64 << 20,  # every per-step tensor and augmentation chunk is smaller
            _M_TRIM_THRESHOLD: 1 << 30,  # keep up to 1 GB freed at the heap's top for the next step
            _M_TOP_PAD: 64 << 20}  # and grow the heap in 64 MB pieces


def keep_freed_memory() -> None:
    """Make glibc reuse freed memory instead of handing it back to the kernel and faulting it in again.

    A training step allocates and frees tensors of a few MB (64 x 16 x 28 x 28 floats is 3.2 MB).
    By default glibc serves such blocks with mmap, or trims them off the heap when freed, so
    steps pay page faults and the kernel's zeroing of fresh pages: a fresh-clone `dvc repro`
    took 3.8 million minor page faults. With these settings an epoch of 12,800 images took
    about 20 faults after the first instead of 30,000-100,000, and an fp32 step on a 2-core
    AMD EPYC 8.0-8.8 ms instead of 11.8-12.2 ms (bf16: 6.9 instead of 8.4). The memory stays
    the process's until it exits. Same arithmetic, same results; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        for option, value in _MALLOPT.items():
            libc.mallopt(option, value)
    except (OSError, AttributeError):  # not glibc (musl, say): its allocator, its behaviour
        pass


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (what is wrong, and where to look) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def parser(doc: str, *, command: str, reads: Sequence[str], writes: Sequence[str]) -> Parser:
    """A command's parser: its docstring as the description, then what it reads and what it writes.

    `reads` and `writes` are the files (or things) the command touches, shown by `--help`; the stages'
    lists are checked against their deps and outs in dvc.yaml by a test.
    """
    epilog = f"reads:  {', '.join(reads)}\nwrites: {', '.join(writes) or 'nothing'}"
    made = Parser(prog=f"python -m {command}", description=doc.strip(), epilog=epilog,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--debug", action="store_true",
                      help="on an error, print the full traceback (as MNIST_DEBUG=1 does)")
    return made


def _os_error_line(exc: OSError) -> str:
    """An OSError as one line that says what happened to which file, and what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}could not be written: the disk is full ({exc.strerror}); free some space and run again"
    if exc.errno == errno.EROFS:
        return f"{where}could not be written: the file system is read-only ({exc.strerror})"
    return f"{where}{exc.strerror or exc}" if exc.filename else str(exc)


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> None:
    """Parse argv (default: the command line), then call main(args); expected failures exit 2, Ctrl-C 130."""
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    debug = os.environ.get("MNIST_DEBUG", "") not in ("", "0") or args.debug
    signal.signal(signal.SIGTERM, _on_sigterm)
    keep_freed_memory()
    try:
        main(args)
    except (StageError, ParamsError, OSError) as exc:
        if debug:
            traceback.print_exc()
        # OSError: unreadable or unwritable files, a full disk, a read-only mount.
        print(f"error: {_os_error_line(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was completed", file=sys.stderr)
        sys.exit(130)
