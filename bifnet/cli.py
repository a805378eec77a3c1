"""Command-line interface: thin argument parsing over the public API.

Every :class:`bifnet.errors.BifnetError` becomes one line on stderr and a
non-zero exit code; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bifnet.errors import BifnetError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bifnet",
        description="Continuation and bifurcation analysis of brain-network models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

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
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="Dask scheduler (tcp://host:port) for sweep steps; default: local processes")

    conn = sub.add_parser("connectome", help="connectome utilities")
    conn_sub = conn.add_subparsers(dest="connectome_command", required=True)
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
    folder = execute_run_file(
        args.run_file, out=args.out, overrides=overrides, force=args.force, resume=args.resume
    )
    logging.getLogger("bifnet").info("results written to %s", folder)
    return 0


def _command_connectome_info(args) -> int:
    from bifnet.connectome import describe_connectome

    print(describe_connectome(args.source, key=args.key, drop_zero_rows=args.drop_zero_rows,
                              drop_self_loops=args.drop_self_loops, symmetrize=args.symmetrize))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bifnet`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "run":
            return _command_run(args)
        return _command_connectome_info(args)
    except BifnetError as error:
        if args.debug:
            raise
        print(f"bifnet: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("bifnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
