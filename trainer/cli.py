"""Command line of `cxrviewer-train` (the subcommands grow with the trainer issue)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrviewer-train",
        description="Retrain cxrviewer's chest X-ray models, optionally on clinician-corrected boxes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("fit", help="train a model (not implemented yet)")
    sub.add_parser("evaluate", help="evaluate a model (not implemented yet)")
    sub.add_parser("export", help="export a run as a model file (not implemented yet)")
    sub.add_parser("methods", help="list the training methods (not implemented yet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print(f"cxrviewer-train: '{args.command}' is not available yet in this version.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
