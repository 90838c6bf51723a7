"""Planning a sweep: SPEC(s) x override sets x grid values x seeds, from the command line and/or
a sweep file, each variant named and validated exactly as `train` validates it before the
first one starts."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.lang.errors import BuilderError, Document, Loc, SpecError, format_path, validate
from builder.lang.loading import find_spec, load_spec, parse_path
from builder.lang.yaml_io import load_document, parse_scalar
from builder.tools.search_config import SearchConfig
from builder.tools.sweep_file import SweepFile
from builder.tools.sweep_record import run_state
from training.cli import load_training
from training.flags import MAX_VARIANTS, RUN_FLAGS
from training.runfiles import SPEC_FILE

if TYPE_CHECKING:
    from builder.lang.spec import Spec
    from training.config import TrainingConfig


# --- variants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """One `--set PATH=VALUE` of a variant and where it was written (for messages)."""

    path: str
    value: Any
    origin: str

    @property
    def arg(self) -> str:
        return f"{self.path}={json.dumps(self.value)}"  # JSON is YAML flow: parses back to `value`


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: a base spec, its own overrides (the diff from the base), a seed."""

    name: str  # the run directory's name
    group: str  # the name without the seed: runs that differ only in seed are averaged
    spec: str
    overrides: tuple[Override, ...]
    seed: int | None
    origin: str  # where it was defined


@dataclass
class Plan:
    """Everything a sweep needs, from the command line and/or a sweep file."""

    out: Path
    specs: list[str]
    grid: list[list[Override]] = field(default_factory=list)  # one list of alternatives per field
    sets: list[list[Override]] = field(default_factory=list)  # override sets (alternatives too)
    common: list[str] = field(default_factory=list)  # --set arguments of every variant
    flags: dict[str, Any] = field(default_factory=dict)  # training flag dest -> value
    seeds: int = 1
    jobs: int = 1
    search: SearchConfig | None = None
    name: str = ""  # the sweep file's stem, else the first spec's
    origin: str = "command line"


def expand(plan: Plan) -> list[Variant]:
    """Specs x override sets x grid x seeds, in that nesting order, with unique names; more than
    MAX_VARIANTS of them is refused before any is made."""
    check_count(plan)
    seeds: list[int | None] = [None]  # one seed: the spec's (or --seed)
    if plan.seeds > 1:
        base = _base_seed(plan.flags.get("seed"))
        seeds = list(range(base, base + plan.seeds))
    stems = [Path(s).stem for s in plan.specs]
    out: list[Variant] = []
    for index, (spec, stem) in enumerate(zip(plan.specs, stems), start=1):
        label = stem if stems.count(stem) == 1 else f"{stem}{index}"
        for chosen in itertools.product(plan.sets or [[]], *([[o] for o in values] for values in plan.grid)):
            overrides = tuple(o for part in chosen for o in part)
            group = variant_name(label, overrides)
            for seed in seeds:
                name = group if seed is None else f"{group}--seed={seed}"
                origin = overrides[-1].origin if overrides else plan.origin
                out.append(Variant(name, group, spec, overrides, seed, origin))
    return _unique(out)


def check_count(plan: Plan) -> None:
    """The number of variants, from the sizes alone (a grid of millions is never expanded)."""
    sizes = [("specs", len(plan.specs)), ("override sets", len(plan.sets)),
             *((f"{values[0].path} values", len(values)) for values in plan.grid if values), ("seeds", plan.seeds)]
    count = math.prod(n for _, n in sizes if n)
    if count > MAX_VARIANTS:
        product = " x ".join(f"{n:,} {what if n > 1 else what[:-1]}" for what, n in sizes if n)
        raise SpecError.at(Loc(plan.origin), f"{count:,} variants ({product}); a sweep runs at most {MAX_VARIANTS:,}")


def _base_seed(value: object) -> int:
    """The first of --seeds N seeds: --seed (as typed) or 0."""
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        raise SpecError.at(Loc(f"--seed {value}"), "must be a whole number") from None


def variant_name(stem: str, overrides: Sequence[Override]) -> str:
    """`alexnet_digits--width=0.5--defaults.norm=batchnorm`: readable, and a safe directory name."""
    # a stem of dots (a spec named `...yaml`) would name the sweep directory or its parent
    parts = [_slug(stem).lstrip(".") or "_", *(f"{_slug(o.path)}={_slug(_short(o.value))}" for o in overrides)]
    name = "--".join(parts)
    if len(name) > 150:  # file systems allow 255 bytes; keep room for suffixes
        name = f"{name[:140]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def _short(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) == {"kind"}:
            return str(value["kind"])
        return "_".join(f"{k}{_short(v)}" if k != "kind" else str(v) for k, v in value.items())
    if isinstance(value, list):
        return "-".join(_short(v) for v in value)
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text.replace("[", "").replace("]", "")).strip("_") or "_"


def _unique(variants: list[Variant]) -> list[Variant]:
    """Two variants with the same name (values that slug alike) get -2, -3, ... in order."""
    seen: dict[str, int] = {}
    out = []
    for v in variants:
        n = seen.get(v.name, 0) + 1
        seen[v.name] = n
        out.append(v if n == 1 else Variant(f"{v.name}-{n}", f"{v.group}-{n}", v.spec, v.overrides, v.seed, v.origin))
    return out


# --- building a plan ----------------------------------------------------------------------------


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The command line's plan; a single path holding a sweep file (a `specs:` key) starts from it."""
    paths = [str(find_spec(p)) for p in args.paths]  # a shipped spec's name, as anywhere else
    plan = Plan(out=Path(), specs=paths)
    if len(paths) == 1 and _is_sweep_file(paths[0]):
        plan = plan_from_file(paths[0])
    plan.grid += [_grid_arg(text) for text in args.grid]
    plan.common += args.overrides
    for flag in RUN_FLAGS:
        if getattr(args, flag.dest) is not None:
            plan.flags[flag.dest] = getattr(args, flag.dest)
    plan.seeds = args.seeds or plan.seeds
    plan.jobs = args.jobs or plan.jobs
    if not plan.name and plan.specs:
        plan.name = Path(plan.specs[0]).stem
    plan.out = Path(args.out) if args.out else Path("sweeps") / plan.name
    return plan


def _is_sweep_file(path: str) -> bool:
    """A sweep file has a `specs:` key (a spec never does); one that does not parse is reported at once."""
    doc = load_document(path)
    return isinstance(doc.data, dict) and "specs" in doc.data


def plan_from_file(path: str) -> Plan:
    """Read and validate a sweep file; its grid values are located at their lines."""
    doc = load_document(path)
    sweep: SweepFile = validate(SweepFile, doc)
    _check_paths(doc, sweep)
    here = Path(path).parent
    plan = Plan(
        out=Path(), specs=[_relative(here / s) for s in sweep.specs], common=list(sweep.overrides),
        flags=sweep.train.model_dump(exclude_none=True), seeds=sweep.seeds, jobs=sweep.jobs, search=sweep.search,
        name=Path(path).stem, origin=str(doc.locate(())) if doc.locs else path,
    )
    plan.grid = [
        [Override(key, value, str(doc.locate(("grid", key, i)))) for i, value in enumerate(values)]
        for key, values in sweep.grid.items()
    ]
    if sweep.variants:
        plan.sets = [
            [Override(k, v, str(doc.locate(("variants", i, k)))) for k, v in one.items()]
            for i, one in enumerate(sweep.variants)
        ]
    return plan


def _check_paths(doc: Document, sweep: SweepFile) -> None:
    """Every grid, variant and search key must be a field path like `blocks[0].out_channels`."""
    keys: list[tuple[tuple[str | int, ...], str]] = [(("grid", k), k) for k in sweep.grid]
    keys += [(("variants", i, k), k) for i, one in enumerate(sweep.variants) for k in one]
    keys += [(("search", "params", k), k) for k in (sweep.search.params if sweep.search else {})]
    found = []
    for where, key in keys:
        try:
            parse_path(key, doc.locate(where, at_key=True))
        except SpecError as exc:
            found += exc.diagnostics
    if found:
        raise SpecError(found)


def _relative(path: Path) -> str:
    """A spec path as a person would type it from here (relative below the working directory)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def _grid_arg(text: str) -> list[Override]:
    """`--grid FIELD=V1,V2,...`: the values are a YAML flow list, so `{kind: lrn},{kind: batchnorm}` works."""
    source = f"--grid {text}"
    path, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise SpecError.at(Loc(source), "expected FIELD=V1,V2,..., like classifier.dropout=0.3,0.5")
    parse_path(path.strip(), Loc(source))
    try:
        parsed = parse_scalar(f"[{values}]", source)
    except SpecError:
        raise SpecError.at(Loc(source), f"invalid YAML values '{values}'") from None
    return [Override(path.strip(), v, source) for v in parsed]


# --- validation: every variant before any trains ------------------------------------------------------


class SweepInvalid(BuilderError):
    """Variants that `train` would refuse: each named, then its located errors."""

    def __init__(self, failures: list[tuple[Variant, int, int, SpecError]]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} invalid variant(s)")

    def lines(self) -> list[str]:
        out = []
        for v, index, count, exc in self.failures:
            sets = " ".join(f"--set {o.arg}" for o in v.overrides) or "no overrides"
            out.append(f"{v.origin}: error: variant {index} of {count} ({v.name}: {v.spec} {sets}) is invalid:")
            out += [f"  {line}" for line in exc.lines()]
        out.append(f"nothing was trained: {len(self.failures)} of {self.failures[0][2]} variants are invalid")
        return out


def train_namespace(plan: Plan, v: Variant) -> argparse.Namespace:
    """The arguments `train` gets for this variant (one source of truth for validation and running)."""
    flags = {f.dest: plan.flags.get(f.dest) for f in RUN_FLAGS}
    if v.seed is not None:
        flags["seed"] = v.seed
    overrides = [*plan.common, *(o.arg for o in v.overrides)]
    return argparse.Namespace(spec=v.spec, overrides=overrides, quiet=True, **flags)


def validate_variants(plan: Plan, variants: list[Variant]) -> dict[str, int]:
    """Each variant's number of epochs, once all of them validate as `train` validates them
    (and no finished run directory holds another spec or recipe under the variant's name)."""
    epochs, failures = {}, []
    for i, v in enumerate(variants, start=1):
        try:
            _, spec, config = load_training(train_namespace(plan, v))
            epochs[v.name] = config.epochs
            run_dir = plan.out / v.name
            why = changed_since(run_dir, spec, config) if run_state(run_dir, config.epochs) == "done" else None
            if why:
                message = f"holds a finished run of another spec or recipe ({why}); remove it or choose another --out"
                raise SpecError.at(Loc(str(run_dir)), message)
        except SpecError as exc:
            failures.append((v, i, len(variants), exc))
    if failures:
        raise SweepInvalid(failures)
    return epochs


def changed_since(run_dir: Path, spec: Spec, config: TrainingConfig) -> str | None:
    """How the finished run's spec.yaml differs from this variant (a base spec edited since...), or None.

    The fields a resumed run may change (epochs, device...) and precision (auto is resolved per
    device) do not count, as for `train --resume`."""
    from training.config import RESUMABLE_CHANGES
    from training.runfiles import recipe_changes, spec_data

    try:
        saved = load_spec(run_dir / SPEC_FILE)
    except SpecError:
        return "its spec.yaml is unreadable"
    found = recipe_changes(spec_data(saved), saved.training or {}, spec, config, RESUMABLE_CHANGES | {"precision"})
    if not found:
        return None
    path, old, new = found[0]
    return f"{format_path(path)} is {json.dumps(new)} here but {json.dumps(old)} in the run"


def new_record(plan: Plan, v: Variant, **more: Any) -> dict[str, Any]:
    """What variant.json says while the run goes on (the leaderboard reads group and overrides)."""
    return {"name": v.name, "group": v.group, "spec": v.spec, "overrides": [o.arg for o in v.overrides],
            "common": plan.common, "seed": v.seed, **more, "status": "running"}
