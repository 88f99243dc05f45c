"""``python -m recovery``: create, inspect and reset a Bytewax recovery store.

Commands::

    python -m recovery init DIR --partitions N [--force | --if-missing]
    python -m recovery inspect DIR [--json]
    python -m recovery reset DIR --yes [--partitions N]

``init`` creates ``DIR`` (with parents) and ``N`` empty partitions; it refuses to touch an existing
store unless ``--force`` (replace it, losing its state) or ``--if-missing`` (keep it if it has
``N`` partitions: idempotent container set-up). ``inspect`` prints what a resumed run would start
from. ``reset`` deliberately starts over: it deletes the partitions and creates empty ones with
the same count; it does nothing without ``--yes``. Errors print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from recovery.store import StoreError, StoreReport, init_store, inspect_store, partition_files, reset_store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recovery", description="Create, inspect and reset a Bytewax recovery store."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create an empty store of N partitions")
    init.add_argument("directory", type=Path)
    init.add_argument(
        "--partitions",
        "-n",
        type=int,
        required=True,
        help="partition count (>= the largest total worker count you will ever run; fixed)",
    )
    mode = init.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="replace an existing store (loses its state)")
    mode.add_argument(
        "--if-missing", action="store_true", help="keep an existing store that has N partitions"
    )

    insp = sub.add_parser("inspect", help="show epochs, state per step and input offsets")
    insp.add_argument("directory", type=Path)
    insp.add_argument("--json", action="store_true", help="print the report as JSON")

    reset = sub.add_parser("reset", help="delete the store and re-create it empty (start over)")
    reset.add_argument("directory", type=Path)
    reset.add_argument("--yes", action="store_true", help="confirm: the store's state is lost")
    reset.add_argument("--partitions", "-n", type=int, help="partition count (default: the old store's)")
    return parser


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def _as_json(report: StoreReport) -> str:
    return json.dumps(_jsonable(dataclasses.asdict(report)), indent=2, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            existed = bool(partition_files(args.directory))
            report = init_store(args.directory, args.partitions, force=args.force, if_missing=args.if_missing)
            if existed and args.if_missing:
                n = report.partition_count
                print(f"recovery: {args.directory} already holds a store of {n} partitions")
            else:
                print(f"recovery: created {report.partition_count} empty partitions in {args.directory}")
        elif args.command == "inspect":
            report = inspect_store(args.directory)
            print(_as_json(report) if args.json else report.format())
        else:
            if not args.yes:
                report = inspect_store(args.directory)
                print(
                    f"recovery: reset would delete {len(report.partitions)} partitions of {args.directory} "
                    f"(last complete epoch {report.last_complete_epoch}) and start over; "
                    "run again with --yes to do it",
                    file=sys.stderr,
                )
                return 1
            report = reset_store(args.directory, partitions=args.partitions)
            print(f"recovery: reset {args.directory}: {report.partition_count} empty partitions")
    except StoreError as e:
        print(f"recovery: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
