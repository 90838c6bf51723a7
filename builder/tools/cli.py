"""Command line: `python -m builder {validate,summarize,...} SPEC`.

Each command is a small function taking parsed arguments and returning an exit status.
Torch is imported inside the commands that need it, never at the top of this module.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from builder.lang.errors import BuilderError, Diagnostic, Document, Loc, SpecError, validate
from builder.lang.loading import checked_spec, find_spec, load_spec, resolve_document, shipped_name, shipped_specs
from builder.lang.shapes import ShapeReport, infer
from builder.lang.spec import Spec
from training.flags import DEVICE, MAX_BATCH, MAX_DEPTH, Flag, bounded_int  # torch-free
from training.outputs import add_force_flag, check_output

if TYPE_CHECKING:  # torch only for the type checker: this module imports it inside commands
    import torch
    from torch import nn


SPEC_HELP = "path to a YAML spec, or a shipped spec's name (see `list`)"


def _add_spec_args(parser: argparse.ArgumentParser, spec_help: str = SPEC_HELP, nargs: str | None = None) -> None:
    parser.add_argument("spec", help=spec_help, nargs=nargs)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field, e.g. --set num_classes=100 --set blocks[0].out_channels=64",
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused: for work that is bounded (a spec file holds at most
    100,000 YAML values) and leaves no cycles worth collecting (a validate's passes cost ~7 ms)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def cmd_validate(args: argparse.Namespace) -> int:
    with _gc_paused():
        spec, report = _validate_all(resolve_document(args.spec, args.overrides))
    last = report.blocks[-1].out_shape
    print(
        f"{args.spec}: OK: {spec.name}, {len(spec.blocks)} blocks, output {'x'.join(map(str, last))}, "
        f"{_head_text(spec, report)}, {report.total_params:,} parameters"
    )
    return 0


def _head_text(spec: Spec, report: ShapeReport) -> str:
    """'flatten 9216' for a head with a flatten; 'per-pixel 4x160x160' for a dense head (one without
    its own conv too); 'no head' for a spec that ends with its last block."""
    head = report.head
    if head is not None and head.flatten is not None:
        return f"flatten {report.flatten}"
    if head is not None and getattr(spec.the_head, "kind", None) == "dense":
        return f"per-pixel {'x'.join(map(str, head.out))}"
    return "no head"


def _validate_all(doc: Document) -> tuple[Spec, ShapeReport]:
    """The spec and its shapes, after checking its `training:` section too; every problem of both at once."""
    found: list[Diagnostic] = []
    checked = None
    try:
        checked = checked_spec(doc)
    except SpecError as exc:
        found += exc.diagnostics
    if doc.data.get("training") is not None:
        from training.config import TrainingConfig  # pydantic only, no torch; built only when needed

        try:
            validate(TrainingConfig, doc, prefix=("training",))
        except SpecError as exc:
            found += exc.diagnostics
    if found or checked is None:
        raise SpecError(found)
    return checked


def cmd_summarize(args: argparse.Namespace) -> int:
    from builder.model.summary import summarize

    spec = load_spec(args.spec, args.overrides)
    result = summarize(spec, device=args.device, batch_size=args.batch_size, depth=args.depth)
    print(result)
    if not result.ok:
        print(f"{args.spec}: error: torchinfo disagrees with the static shapes", file=sys.stderr)
        return 2
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from builder.lang.loading import dump_spec

    print(dump_spec(load_spec(args.spec, args.overrides)), end="")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from builder.lang.diff import diff_specs

    a, b = load_spec(args.spec_a), load_spec(args.spec, args.overrides)
    print(f"A: {args.spec_a} ({a.name})\nB: {args.spec} ({b.name})")
    print("\n".join(diff_specs(a, b)))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from builder.tools.schema import schema_text

    print(schema_text(), end="")
    return 0


MAX_DRAW_BLOCKS = 200  # 200 blocks drew in 8 s, 2,000 in 51 s (2 busy cores); more is unreadable anyway


def cmd_draw(args: argparse.Namespace) -> int:
    from builder.tools.draw import draw

    check_output(args.output, flag="-o", force=args.force, parents=True)
    spec = load_spec(args.spec, args.overrides)
    if len(spec.blocks) > MAX_DRAW_BLOCKS:
        msg = f"{len(spec.blocks)} blocks; draw accepts at most {MAX_DRAW_BLOCKS} (use `summarize` instead)"
        raise SpecError.at(Loc(args.spec), msg, ("blocks",))
    out = draw(spec, args.output)
    print(f"wrote {out}")
    return 0


def cmd_port_weights(args: argparse.Namespace) -> int:
    from safetensors.torch import save

    from builder.lang.files import write_bytes
    from builder.model.build import build_model
    from builder.model.port import port_weights, read_state_dict

    if args.weights is None and args.torchvision is None:
        raise BuilderError("port-weights: give a WEIGHTS file, --torchvision NAME, or both")
    output = check_output(args.output, flag="-o", force=args.force)
    spec = load_spec(args.spec, args.overrides)
    model = build_model(spec)
    state = read_state_dict(args.weights) if args.weights is not None else None
    if args.torchvision is None:
        assert state is not None  # checked above
        pairs = port_weights(model, state)
        checked = "only names and shapes were checked; give --torchvision NAME to compare outputs"
    else:
        pairs, checked = _port_from_torchvision(model, spec, args.torchvision, state, where=args.spec)
    write_bytes(output, save({k: v.contiguous() for k, v in model.state_dict().items()}), replace=args.force)
    print(f"copied {len(pairs)} tensors ({pairs[0][0]} -> {pairs[0][1]}, ...); wrote {args.output}; {checked}")
    return 0


def _port_from_torchvision(
    model: nn.Module, spec: Spec, name: str, state: Mapping[str, torch.Tensor] | None, *, where: str
) -> tuple[list[tuple[str, str]], str]:
    """Port torchvision's `name` (holding `state`, else random) into `model`; refuse when outputs differ."""
    import torch

    from builder.model.port import TOLERANCE, OutputsDiffer, output_difference, port_weights, torchvision_model

    torch.manual_seed(0)
    reference = torchvision_model(name, state)
    pairs = port_weights(model, reference.state_dict())
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    diff, relative = output_difference(model, reference, shape)
    figure = f"max abs output difference from torchvision's {name} {diff:.2e} ({relative:.2e} relative)"
    if not relative <= TOLERANCE:  # NaN too
        raise OutputsDiffer(f"{where} is not torchvision's {name}: {figure} exceeds {TOLERANCE:g}; nothing written")
    return pairs, figure



def cmd_bench(args: argparse.Namespace) -> int:
    from builder.tools.bench import bench, write_json

    if args.json:
        check_output(args.json, flag="--json", force=args.force)
    spec = load_spec(args.spec, args.overrides)
    result = bench(spec, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                   device=args.device, options=args.options)
    print(result)
    if args.json:
        print(f"wrote {write_json(result, args.json, replace=args.force)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """The shipped specs, computed statically (no torch): what `SPEC` may name anywhere."""
    rows, found = [("spec", "name", "input", "classes", "parameters", "mult-adds", "file")], []
    for path in shipped_specs():
        try:
            spec = load_spec(path)
        except SpecError as exc:
            found += exc.diagnostics
            continue
        report, shape = infer(spec), spec.input
        rows.append((shipped_name(path), spec.name, f"{shape.channels}x{shape.height}x{shape.width}",
                     str(spec.classes or "-"), f"{report.total_params:,}", _giga(report.mult_adds), str(path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.rjust(w) if 3 <= i <= 5 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              + "  " + row[-1])
    if found:
        raise SpecError(found)
    return 0


def _giga(n: int) -> str:
    """Mult-adds as torchvision quotes them (G, 3 decimals), in M below 0.01 G so LeNet is not 0.000 G."""
    return f"{n / 1e9:.3f} G" if n >= 1e7 else f"{n / 1e6:.3f} M"


EXAMPLES = {  # shown at the end of each command's --help
    "validate": "python -m builder validate alexnet.yaml --set num_classes=100",
    "summarize": "python -m builder summarize resnet18 --device cpu --depth 4",
    "resolve": "python -m builder resolve resnet50 > runs/resnet50_explicit.yaml",
    "diff": "python -m builder diff resnet18 resnet34",
    "list": "python -m builder list",
    "schema": "python -m builder schema > arch_specs/spec.schema.json",
    "draw": "python -m builder draw googlenet -o runs/googlenet.png",
    "port-weights": "python -m builder port-weights resnet18 resnet18_tv.pth -o runs/resnet18.safetensors",
    "bench": "python -m builder bench alexnet_cifar --options fp32,bf16 --batch-size 128",
    "train": "python -m builder train alexnet_digits --epochs 3   # then: train --resume runs/alexnet_digits-...",
    "evaluate": "python -m builder evaluate runs/alexnet_digits-20250101-120000 --weights best",
    "samples": "python -m builder samples runs/alexnet_digits-20250101-120000 -o my_images --count 8",
    "predict": "python -m builder predict runs/alexnet_digits-20250101-120000 my_images/ -o runs/preds.csv",
    "export": "python -m builder export runs/alexnet_digits-20250101-120000 --format onnx -o runs/model.onnx",
    "sweep": "python -m builder sweep alexnet_digits --grid width=0.5,1.0 --epochs 1 --out runs/sweep",
    "leaderboard": "python -m builder leaderboard runs/sweep",
}


def _add_examples(sub: argparse._SubParsersAction) -> None:
    """Every command's --help ends with an example (a test checks that each command has one)."""
    for name, command in sub.choices.items():
        if name in EXAMPLES:
            command.epilog = f"example:\n  {EXAMPLES[name]}"
            command.formatter_class = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m builder", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="CNNs as YAML specs: check, summarize, draw, train, use and compare them "
                    "(the installed cnn-builder command is the same program).",
        epilog="a spec is a path or a shipped spec's name (see `list`); each command's --help has an example:\n"
               "  python -m builder summarize resnet18 --help",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a spec and its static shapes (no torch import)")
    _add_spec_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("summarize", help="print the torchinfo table and check it against the spec")
    _add_spec_args(p)
    p.add_argument("--device", default="auto",
                   help="auto (default: cpu for a small model, else meta), meta (no weights allocated), cpu, cuda, ...")
    Flag("--batch-size", "batch_size", "N", "batch size of the dummy input (default 1)",
         check=bounded_int(1, MAX_BATCH)).add(p, default=1)
    Flag("--depth", "depth", "N", "nesting depth of the table (default 3)",
         check=bounded_int(0, MAX_DEPTH)).add(p, default=3)
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("resolve", help="print the fully resolved spec (extends, defaults, --set, width)")
    _add_spec_args(p)
    p.set_defaults(func=cmd_resolve)

    p = sub.add_parser("diff", help="compare two specs block by block (--set applies to B)")
    p.add_argument("spec_a", metavar="A", help="the spec to compare against (a path or a shipped name)")
    _add_spec_args(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("list", help="the shipped specs (usable by name anywhere): parameters, mult-adds, files")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("schema", help="print the JSON Schema of spec files")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("draw", help="render the architecture as a PNG or SVG picture")
    _add_spec_args(p)
    p.add_argument("-o", "--output", required=True, help="output file, .png or .svg")
    add_force_flag(p)
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("port-weights", help="copy a torchvision state dict into the built model")
    _add_spec_args(p)
    p.add_argument("weights", nargs="?", help="source state dict: .pth/.pt (loaded with weights_only=True) or "
                   ".safetensors; with --torchvision it is optional (random weights are compared)")
    p.add_argument("--torchvision", metavar="NAME", help="torchvision's model NAME holds the weights: port them and "
                   "refuse (exit 1) unless the outputs agree within 1e-5 relative")
    p.add_argument("-o", "--output", required=True, help="where to write the ported model.safetensors")
    add_force_flag(p)
    p.set_defaults(func=cmd_port_weights, late_positionals=("weights",))

    p = sub.add_parser("bench", help="measure training images/s under fp32, channels_last, bf16, fp16, compile")
    _add_spec_args(p)
    Flag("--batch-size", "batch_size", "N", "images per step (default 64)",
         check=bounded_int(1, MAX_BATCH)).add(p, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per option first (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported (default 3)")
    DEVICE.add(p, default="auto")
    p.add_argument("--options", default="all", help="comma list of fp32,channels_last,bf16,fp16,compile (default all)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    add_force_flag(p)
    p.set_defaults(func=cmd_bench)

    from training.cli import add_train_parser  # torch-free at import

    add_train_parser(sub, _add_spec_args)

    from training.commands import add_commands  # evaluate, predict, export (torch-free at import)

    add_commands(sub)

    from builder.tools.sweep_cli import add_leaderboard_parser, add_sweep_parser  # their work loads when run

    add_sweep_parser(sub)
    add_leaderboard_parser(sub)
    _add_examples(sub)
    return parser


def _late_positionals(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Fill an optional positional given after an option (argparse leaves `SPEC --set X WEIGHTS`'s
    WEIGHTS unmatched: it matches optional positionals only next to the first one)."""
    for name in getattr(args, "late_positionals", ()):
        if extra and getattr(args, name) is None and not extra[0].startswith("-"):
            setattr(args, name, extra.pop(0))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")


DEBUG_ENV = "BUILDER_DEBUG"  # set: an unforeseen exception shows its traceback


def run() -> None:
    """The process entry (`python -m builder`, the `cnn-builder` script): main(), then exit with its status."""
    # What is imported by now (modules, pydantic's schemas) lives until the process ends: frozen, the
    # cyclic GC and the interpreter's teardown skip it (about 30 ms of a 0.3 s validate)
    gc.freeze()
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure is printed as plain lines, never a traceback."""
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)  # a flag's value out of bounds is a located line
        _late_positionals(parser, args, extra)
        for name in ("spec", "spec_a"):  # a shipped spec's name becomes the file read, for every message
            if getattr(args, name, None) is not None:
                setattr(args, name, str(find_spec(getattr(args, name))))
        return int(args.func(args))
    except BuilderError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 141
    except Exception as exc:  # a failure nothing foresaw: still one line (the traceback on request)
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: the command failed unexpectedly: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1
