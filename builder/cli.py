"""Command line: `python -m builder {validate,summarize,...} SPEC`.

Each command is a small function taking parsed arguments and returning an exit status.
Torch is imported inside the commands that need it, never at the top of this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from builder.errors import BuilderError
from builder.loading import load_spec
from builder.shapes import infer


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="path to a YAML spec")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field, e.g. --set num_classes=100 --set blocks[0].out_channels=64",
    )


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    report = infer(spec)
    last = report.blocks[-1].out_shape
    print(
        f"{args.spec}: OK: {spec.name}, {len(spec.blocks)} blocks, output {'x'.join(map(str, last))}, "
        f"flatten {report.flatten}, {report.total_params:,} parameters"
    )
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from builder.summary import summarize

    spec = load_spec(args.spec, args.overrides)
    result = summarize(spec, device=args.device, batch_size=args.batch_size, depth=args.depth)
    print(result)
    if not result.ok:
        print(f"{args.spec}: error: torchinfo disagrees with the static shapes", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m builder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a spec and its static shapes (no torch import)")
    _add_spec_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("summarize", help="print the torchinfo table and check it against the spec")
    _add_spec_args(p)
    p.add_argument("--device", default="meta", help="meta (default: no weights allocated), cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the dummy input (default 1)")
    p.add_argument("--depth", type=int, default=3, help="nesting depth of the table (default 3)")
    p.set_defaults(func=cmd_summarize)

    from training.cli import add_train_parser  # torch-free at import

    add_train_parser(sub, _add_spec_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure is printed as plain lines, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BuilderError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
