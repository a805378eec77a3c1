"""Command-line interface: thin argument parsing over the public API.

Every :class:`bifnet.errors.BifnetError` becomes one line on stderr and a
non-zero exit code; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bifnet.errors import BifnetError, RunFileError


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line (exit 2), like every other error."""

    def error(self, message):
        self.exit(2, f"bifnet: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bifnet",
        description="Continuation and bifurcation analysis of brain-network models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="execute a run file (continuation_runs/*.toml)")
    run.add_argument("run_file", help="path of the run file")
    run.add_argument("--out", help="output folder (default: results/<run file stem>)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a top-level key or a parameter (repeatable), e.g. --set eps=12",
    )
    run.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    run.add_argument("--resume", action="store_true",
                     help="run again in an existing output folder; sweeps skip the points they finished")
    run.add_argument("--retry-failed", action="store_true",
                     help="with --resume: sweeps compute again the points that failed")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="Dask scheduler (tcp://host:port) for sweep steps; default: local processes")

    conn = sub.add_parser("connectome", help="connectome utilities")
    conn_sub = conn.add_subparsers(dest="connectome_command", required=True, parser_class=_Parser)
    info = conn_sub.add_parser("info", help="describe a connectome (built-in name or file)")
    info.add_argument("source", help="tvb66, tvb68, tvb76, tvb96, tvb192 or a path")
    info.add_argument("--key", help="array name inside a .npz or .mat file")
    info.add_argument("--drop-zero-rows", action="store_true", help="drop regions whose row is all zero")
    info.add_argument("--drop-self-loops", action="store_true", help="set the diagonal to zero")
    info.add_argument("--symmetrize", nargs="?", const="max", default=False, choices=["max", "mean", "sum"],
                      help="make W symmetric: max(W, W^T) (default), (W + W^T)/2 or W + W^T")
    return parser


def _command_run(args) -> int:
    from bifnet.runs import execute_run_file

    overrides = list(args.overrides) + ([f"dask.scheduler={args.scheduler!r}"] if args.scheduler else [])
    if args.retry_failed and not args.resume:
        raise RunFileError("--retry-failed needs --resume")
    if args.force and args.resume:
        raise RunFileError("--force and --resume exclude each other: --force replaces, --resume continues")
    folder = execute_run_file(
        args.run_file, out=args.out, overrides=overrides, force=args.force, resume=args.resume,
        retry_failed=args.retry_failed,
    )
    logging.getLogger("bifnet").info("results written to %s", folder)
    return 0


def _command_connectome_info(args) -> int:
    from bifnet.connectome import describe_connectome

    print(describe_connectome(args.source, key=args.key, drop_zero_rows=args.drop_zero_rows,
                              drop_self_loops=args.drop_self_loops, symmetrize=args.symmetrize))
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so in-process callers can capture it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(level: int) -> None:
    logger = logging.getLogger("bifnet")
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that cleanup runs as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _partial(error) -> str:
    folder = getattr(error, "partial_output", None)
    return f"; partial output kept in {folder}" if folder else ""


def _quiet_broken_pipe() -> int:
    """stdout was closed by the reader (``| head``): end quietly."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bifnet`` console script.

    Exit codes: 0 success, 1 internal error, 2 run file, 3 model,
    4 connectome, 5 continuation, 6 simulation, 7 output folder,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 141 closed pipe.
    """
    import signal

    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    _configure_logging(level)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a thread in tests)
        previous = None
    try:
        if args.command == "run":
            return _command_run(args)
        return _command_connectome_info(args)
    except BifnetError as error:
        if args.debug:
            raise
        print(f"bifnet: error: {error}{_partial(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as error:
        print(f"bifnet: interrupted{_partial(error)}", file=sys.stderr)
        return 130
    except _Terminated as error:
        print(f"bifnet: terminated (SIGTERM){_partial(error)}", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as error:
        if args.debug:
            raise
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        print(f"bifnet: error: cannot access{where}: {error.strerror or error}{_partial(error)}", file=sys.stderr)
        return 7
    except Exception as error:  # a bug: say so in one line; --debug shows the traceback
        if args.debug:
            raise
        text = str(error).splitlines()[0] if str(error) else ""
        print(f"bifnet: internal error: {type(error).__name__}: {text}{_partial(error)}"
              " (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
