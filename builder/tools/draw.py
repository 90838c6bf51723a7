"""A picture of a spec's architecture, drawn from static shape inference (builder.lang.shapes).

Data flows top to bottom: input -> blocks -> head, in columns that wrap left to right.
Every block is what `infer` reports, at every depth, so the picture cannot disagree with the model:

- a leaf block (conv block, pool, batchnorm, activation, dropout) is a box with its module name,
  its output shape, its layers as coloured pills (one colour per layer family) and its parameters;
- a sequence is a dashed frame titled with its name, output shape and parameters, around its blocks;
- a residual is a frame around its body, with the skip arrow drawn beside it, labelled `identity`
  or `projection 1x1 sN` (+ bn), into an `add` node (with the activation after the add);
- a parallel block is its branches side by side (an empty branch is an `identity` line), merged
  into a `concat` or `add` node that shows the merged shape;
- consecutive composite siblings with the same structure (the same kinds and layers at every
  depth, shapes aside: the copies of a repeat after its first) are drawn once, as a stack of
  cards titled `first ... last x N`, with the output shape of the last copy and the parameters
  of all; the blocks inside show the first copy.

Pure matplotlib (no pyplot, no torch); the file suffix picks PNG or SVG.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.lang.errors import BuilderError
from builder.lang.files import atomic_write  # torch-free
from builder.lang.heads import head_def
from builder.lang.registry import FAMILIES as LABEL_FAMILIES
from builder.lang.registry import Label, child_lists, default_name, kind_def, walk_blocks
from builder.lang.shapes import BlockShape, ShapeReport, infer
from builder.lang.spec import Spec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SUFFIXES = (".png", ".svg")
DPI = 150

# Layout, in inches (the axes use inches as data units, so text sizes in points are predictable).
MARGIN, HEADER_H, WRAP_H = 0.35, 1.05, 0.3  # WRAP_H: room above and below columns for wrap arrows
PAD, LINE_H, PILL_H, PILL_GAP = 0.08, 0.22, 0.2, 0.05
LEAF_MAX_W, LEAF_MIN_W = 2.8, 1.3  # pills wrap onto a new line past LEAF_MAX_W
GAP_Y, GAP_X, COL_GAP = 0.28, 0.2, 0.6  # between items of a list, branches, columns
FRAME_PAD, TITLE_H, SPLIT_H = 0.1, 0.28, 0.26  # SPLIT_H: from the title to the body, room to fork
MERGE_H, SHADOW = 0.42, 0.05
TARGET_ASPECT = 1.6  # width / height the column count aims for
NAME_PT, PILL_PT, SMALL_PT = 8.0, 7.5, 7.0

TEXT, MUTED, LINE = "#222831", "#5f6b7a", "#7d8794"
# (fill, edge) of each layer family's pill.
FAMILIES: dict[str, tuple[str, str]] = {
    "conv": ("#dbe8f7", "#3b6ea8"),
    "norm": ("#dcefdc", "#3f8f4f"),
    "activation": ("#fde6cf", "#c9701a"),
    "pool": ("#e8e0f5", "#7a55b0"),
    "reshape": ("#d9f0ee", "#2e8b84"),
    "linear": ("#f8dcdc", "#b84a4a"),
    "dropout": ("#ebebeb", "#7d7d7d"),
}
if tuple(FAMILIES) != LABEL_FAMILIES:  # every label family has exactly one colour
    raise ImportError(f"draw colours {tuple(FAMILIES)} do not match the label families {LABEL_FAMILIES}")
# (fill, accent) of each kind of box or frame; the accent draws the border and the title.
KINDS: dict[str, tuple[str, str]] = {
    "input": ("#f6f7f9", "#6b7785"),
    "leaf": ("#ffffff", "#3b6ea8"),
    "head": ("#fef7f7", "#b84a4a"),
    "sequence": ("#fafbfc", "#8a94a3"),
    "residual": ("#f3f8fe", "#3b6ea8"),
    "parallel": ("#f8f4fd", "#7a55b0"),
    "merge": ("#fff8ec", "#c9701a"),
}


@dataclass(frozen=True)
class _Item:
    """One thing to draw, with its size in inches (computed once, bottom up).

    `lists` are the item's vertical lists of items: a sequence's blocks, a residual's body, a
    parallel block's branches. `count` > 1: the first of `count` copies of the same structure.
    """

    kind: str  # input, leaf, head, sequence, residual, parallel
    title: str
    shape: str
    note: str  # parameters and their share of the total; "" without parameters
    layers: tuple[str, ...] = ()
    lists: tuple[tuple[_Item, ...], ...] = ()
    merge: str = ""
    skip: str = ""
    count: int = 1
    w: float = 0.0
    h: float = 0.0


@dataclass(frozen=True)
class _Net:
    """What the items are made from: every block's shape and spec by module path."""

    spec: Spec
    shapes: dict[str, BlockShape]
    blocks: dict[str, Any]
    subtree: dict[str, tuple[BlockShape, ...]]
    total: int


def draw(spec: Spec, path: str | Path) -> Path:
    """Render `spec` as a diagram to `path` (.png or .svg, by its suffix) and return the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BuilderError(f"cannot draw to '{path}': the file suffix must be one of {', '.join(SUFFIXES)}")
    report = infer(spec)
    if report.flatten is None:
        problem = report.problems[-1].message if report.problems else "shape inference failed"
        raise BuilderError(f"cannot draw {spec.name}: {problem}")
    items = _items(spec, report)
    fig = _figure(spec, report, items)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuilderError(f"cannot write {path}: {exc.strerror or exc}") from None
    # the one atomic write of the program: a picture is whole or the old one stays
    atomic_write(path, lambda f: fig.savefig(f, format=suffix[1:], dpi=DPI, facecolor="white"))
    return path


# --- What to draw --------------------------------------------------------------------------


def _items(spec: Spec, report: ShapeReport) -> list[_Item]:
    """Input, the top-level blocks (runs of copies folded), the head, in forward order."""
    net = _Net(spec, {s.name: s for s in report.all_blocks}, dict(walk_blocks(spec.blocks)),
               _subtrees(report.all_blocks), report.total_params)
    c, h, w = spec.input.channels, spec.input.height, spec.input.width
    first = _leaf("input", "input", _shape((c, h, w)), "", (Label("image", "reshape"),))
    names = [default_name(b, i) for i, b in enumerate(spec.blocks)]
    return [first, *_list(net, names, ""), _head(spec, report)]


def _subtrees(shapes: list[BlockShape]) -> dict[str, tuple[BlockShape, ...]]:
    """Every block's descendants (all_blocks lists a composite right before them)."""
    out: dict[str, tuple[BlockShape, ...]] = {}
    for i, s in enumerate(shapes):
        end = next((j for j in range(i + 1, len(shapes)) if not shapes[j].name.startswith(s.name + ".")),
                   len(shapes))
        out[s.name] = tuple(shapes[i + 1:end])
    return out


def _structure(net: _Net, name: str) -> tuple[Any, ...]:
    """What two copies of a repeat share: kinds and layers at every depth, relative names; no shapes."""
    own = net.shapes[name]
    return (own.kind, own.layers, *((s.name[len(name):], s.kind, s.layers) for s in net.subtree[name]))


def _list(net: _Net, names: list[str], parent: str) -> tuple[_Item, ...]:
    """Items of sibling blocks (full module paths), each run of identical structure folded into one.

    Titles are module paths relative to the `parent` composite ("branch2.block1"), whose frame
    names the rest.
    """
    items: list[_Item] = []
    i = 0
    while i < len(names):
        j = i + 1
        foldable = bool(net.subtree[names[i]])  # composites only: a leaf is small, and shows its own params
        while foldable and j < len(names) and _structure(net, names[j]) == _structure(net, names[i]):
            j += 1
        items.append(_block(net, names[i], names[i:j], parent))
        i = j
    return tuple(items)


def _block(net: _Net, name: str, run: list[str], parent: str) -> _Item:
    """The item of block `name`, standing for the `run` of copies it starts (usually just itself)."""
    own, block, last = net.shapes[name], net.blocks[name], net.shapes[run[-1]]
    first, final = (n[len(parent) + 1:] if parent else n for n in (name, run[-1]))
    title = first if len(run) == 1 else f"{first} \u2026 {final}"
    note = _params_text(sum(net.shapes[n].params for n in run), net.total)
    shape = _shape(last.out_shape)
    lists = tuple(_list(net, [f"{name}.{sub}{default_name(b, i)}" for i, b in enumerate(blocks)], name)
                  for sub, _, blocks in child_lists(block))
    frame = kind_def(block).frame(net.spec, block, own)  # the kind says how it is drawn
    if frame.style == "leaf":
        return _leaf("leaf", title, shape, note, tuple(_short(label) for label in own.layers), len(run))
    if frame.style == "residual":
        lists = lists[:1]  # the main path; the skip lane is drawn beside it
    return _frame(frame.style, title, shape, note, lists, len(run), frame.merge, frame.skip)


def _head(spec: Spec, report: ShapeReport) -> _Item:
    """The head's box: its layers as static inference labels them (the builder's order)."""
    assert report.head is not None
    head = head_def(spec.the_head)
    note = _params_text(report.classifier_params, report.total_params)
    return _leaf("head", head.title, _outputs(spec, report), note, report.head.labels)


def _outputs(spec: Spec, report: ShapeReport) -> str:
    """'10 classes', '4 x 64 x 64: 4 classes per pixel' (a dense head), or the feature map a spec
    without a classifying head ends with."""
    assert report.head is not None
    if not head_def(spec.the_head).needs_classes:
        return _shape(report.head.out)
    classes = f"{spec.num_classes} class{'es' * (spec.num_classes > 1)}"
    return f"{_shape(report.head.out)}: {classes} per pixel" if len(report.head.out) == 3 else classes


def _short(label: str) -> Label:
    """A layer label without the default stride and padding: 'conv 64 k1 s1 p0' -> 'conv 64 k1'."""
    return Label(re.sub(r" (s1|p0)(?= |$)", "", label), _family(label))


def _family(label: str) -> str:
    """The colour family of a layer label: every kind's labels carry theirs (registry.Label)."""
    if not isinstance(label, Label):
        raise BuilderError(f"cannot draw the layer label '{label}': it has no colour family (use registry.Label)")
    return label.family


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def _params_text(params: int, total: int) -> str:
    """'1,180,672 params \u00b7 10.1%': the count and its share of all parameters."""
    if not params:
        return ""
    share = 100 * params / total
    return f"{params:,} params \u00b7 {f'{share:.1f}%' if share >= 0.05 else '<0.1%'}"


# --- Sizes ---------------------------------------------------------------------------------


@lru_cache(maxsize=4096)  # a pure function of its arguments: the same labels recur many times
def _text_width(text: str, size: float, bold: bool = False) -> float:
    """Rendered width of `text` in inches, from the font's advance widths (no renderer needed)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    return float(text_to_path.get_text_width_height_descent(text, prop, ismath=False)[0]) / 72


def _pill_width(label: str) -> float:
    return _text_width(label, PILL_PT) + 0.14


def _pill_rows(layers: tuple[str, ...]) -> list[list[str]]:
    """Pills packed left to right into rows no wider than LEAF_MAX_W."""
    rows: list[list[str]] = []
    width = LEAF_MAX_W
    for label in layers:
        w = _pill_width(label)
        if rows and width + PILL_GAP + w <= LEAF_MAX_W - 2 * PAD:
            rows[-1].append(label)
            width += PILL_GAP + w
        else:
            rows.append([label])
            width = w
    return rows


def _row_width(row: list[str]) -> float:
    return sum(_pill_width(label) for label in row) + PILL_GAP * (len(row) - 1)


def _badge(count: int) -> str:
    return f"\u00d7 {count}" if count > 1 else ""


def _leaf(kind: str, title: str, shape: str, note: str, layers: tuple[str, ...], count: int = 1) -> _Item:
    """A box: title and shape on one line, the pills below, the parameters last (when there are any)."""
    rows = _pill_rows(layers)
    top_w = _text_width(f"{title} {_badge(count)}", NAME_PT, bold=True) + _text_width(shape, NAME_PT, bold=True)
    widest_row = max((_row_width(r) for r in rows), default=0.0)
    w = max(LEAF_MIN_W, top_w + 0.25, widest_row, _text_width(note, SMALL_PT)) + 2 * PAD
    h = 2 * PAD + LINE_H + len(rows) * (PILL_H + PILL_GAP) + (LINE_H * 0.8 if note else 0.0)
    return _Item(kind, title, shape, note, layers, count=count, w=w + _shadow(count), h=h + _shadow(count))


def _shadow(count: int) -> float:
    """Room for the cards stacked behind a folded run."""
    return 2 * SHADOW if count > 1 else 0.0


def _list_size(items: tuple[_Item, ...]) -> tuple[float, float]:
    if not items:  # an empty parallel branch: the identity
        return _pill_width("identity"), PILL_H
    return max(i.w for i in items), sum(i.h for i in items) + GAP_Y * (len(items) - 1)


def _frame(kind: str, title: str, shape: str, note: str, lists: tuple[tuple[_Item, ...], ...], count: int,
           merge: str = "", skip: str = "") -> _Item:
    """A sequence, residual or parallel frame around its lists, sized to hold them and its title."""
    sizes = [_list_size(items) for items in lists]
    content_w = sum(w for w, _ in sizes) + GAP_X * (len(sizes) - 1)
    content_h = max(h for _, h in sizes)
    if kind == "residual":  # the skip lane on the right, mirrored on the left to keep the body centred
        content_w += 2 * (_pill_width(skip) + 0.2 if skip else 0.3)
    title_w = _title_width(title, count, shape, note)
    w = max(content_w, title_w, _merge_width(merge, shape) if merge else 0.0) + 2 * FRAME_PAD
    h = TITLE_H + content_h + FRAME_PAD
    h += SPLIT_H + GAP_Y + MERGE_H if merge else 0.12
    return _Item(kind, title, shape, note, lists=lists, merge=merge, skip=skip, count=count,
                 w=w + _shadow(count), h=h + _shadow(count))


def _title_width(title: str, count: int, shape: str, note: str) -> float:
    right = f"{shape}  \u00b7  {note}" if note else shape
    return _text_width(f"{title} {_badge(count)}", NAME_PT, bold=True) + _text_width(right, SMALL_PT) + 0.35


def _merge_width(merge: str, shape: str) -> float:
    return max(_text_width(merge, NAME_PT, bold=True), _text_width(shape, SMALL_PT)) + 0.3


# --- Layout --------------------------------------------------------------------------------


def _columns(items: list[_Item]) -> list[list[_Item]]:
    """Items split into columns, in order, with the count whose picture is closest to TARGET_ASPECT."""
    best: list[list[_Item]] = [items]
    best_score = math.inf
    total = sum(i.h for i in items) + GAP_Y * (len(items) - 1)
    for n in range(1, len(items) + 1):
        cols = _pack(items, _limit(items, n, total))
        w = sum(max(i.w for i in col) for col in cols) + COL_GAP * (len(cols) - 1)
        h = max(_list_size(tuple(col))[1] for col in cols)
        score = abs(math.log(w / h / TARGET_ASPECT))
        if score < best_score - 1e-9:
            best, best_score = cols, score
    return best


def _limit(items: list[_Item], n: int, total: float) -> float:
    """The least column height (to 0.01 inch) at which items pack into at most n columns."""
    low, high = max(i.h for i in items), total
    while high - low > 0.01:
        mid = (low + high) / 2
        low, high = (low, mid) if len(_pack(items, mid)) <= n else (mid, high)
    return high


def _pack(items: list[_Item], limit: float) -> list[list[_Item]]:
    """Greedy: fill a column while it stays within `limit` inches (a tall item gets its own)."""
    cols: list[list[_Item]] = [[]]
    height = 0.0
    for item in items:
        if cols[-1] and height + GAP_Y + item.h > limit + 1e-9:
            cols.append([])
        height = item.h if not cols[-1] else height + GAP_Y + item.h
        cols[-1].append(item)
    return cols


# --- Rendering -----------------------------------------------------------------------------


def _figure(spec: Spec, report: ShapeReport, items: list[_Item]) -> Figure:
    """The whole diagram as a matplotlib Figure (not registered with pyplot)."""
    from matplotlib.figure import Figure

    cols = _columns(items)
    widths = [max(i.w for i in col) for col in cols]
    body_w = sum(widths) + COL_GAP * (len(cols) - 1)
    body_h = max(_list_size(tuple(col))[1] for col in cols)
    fig_w = 2 * MARGIN + max(body_w, _header_width(spec, report))
    fig_h = 2 * MARGIN + HEADER_H + 2 * WRAP_H + body_h
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(0, fig_h)
    ax.axis("off")
    _draw_header(ax, spec, report, fig_h - MARGIN)
    _draw_columns(ax, cols, widths, fig_h - MARGIN - HEADER_H - WRAP_H)
    return fig


def _draw_columns(ax: Axes, cols: list[list[_Item]], widths: list[float], top: float) -> None:
    """Each column top-aligned; a wrap arrow from the end of one column to the top of the next."""
    x = MARGIN
    ends: list[tuple[float, float]] = []  # (centre x, bottom y) of each column's last item
    for col, width in zip(cols, widths, strict=True):
        cx = x + width / 2
        if ends:
            (px, py), gap_x = ends[-1], x - COL_GAP / 2
            low, high = py - WRAP_H / 2, top + WRAP_H / 2
            _arrow(ax, [(px, py), (px, low), (gap_x, low), (gap_x, high), (cx, high), (cx, top)])
        ends.append((cx, _draw_list(ax, tuple(col), cx, top)))
        x += width + COL_GAP


def _draw_list(ax: Axes, items: tuple[_Item, ...], cx: float, top: float) -> float:
    """Items stacked downwards from `top`, centred on `cx`, with arrows between; returns the bottom."""
    for k, item in enumerate(items):
        if k:
            _arrow(ax, [(cx, top + GAP_Y), (cx, top)])
        _draw_item(ax, item, cx, top)
        top -= item.h + GAP_Y
    return top + GAP_Y


def _draw_item(ax: Axes, item: _Item, cx: float, top: float) -> None:
    """One item; a folded run gets its stacked cards first, behind it, and is drawn up and left."""
    if item.count > 1:
        w, h = item.w - 2 * SHADOW, item.h - 2 * SHADOW
        accent = KINDS[item.kind][1]
        for k in (2, 1):
            x, y = cx - item.w / 2 + k * SHADOW, top - h - k * SHADOW
            _box(ax, x, y, w, h, "#ffffff", accent, dashed=False)
        cx -= SHADOW
    if item.kind in ("input", "leaf", "head"):
        _draw_leaf(ax, item, cx, top)
    else:
        _draw_frame(ax, item, cx, top)


def _box(ax: Axes, x: float, y: float, w: float, h: float, fill: str, edge: str, dashed: bool,
         lw: float = 1.2) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.07", fc=fill, ec=edge,
                                lw=lw, ls="--" if dashed else "-"))


def _arrow(ax: Axes, points: list[tuple[float, float]], head: bool = True) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1)
    style = "-|>,head_length=5,head_width=3" if head else "-"
    ax.add_patch(FancyArrowPatch(path=MplPath(points, codes), arrowstyle=style, color=LINE, lw=1.2,
                                 shrinkA=0, shrinkB=1 if head else 0, joinstyle="round"))


def _title(ax: Axes, item: _Item, x: float, y: float, w: float, accent: str) -> None:
    """Name (and x N) on the left, shape and parameters on the right, centred on height y."""
    ax.text(x, y, f"{item.title} {_badge(item.count)}".strip(), ha="left", va="center", fontsize=NAME_PT,
            fontweight="bold", color=accent)
    bold = item.kind in ("input", "leaf", "head")  # a box's parameters have their own line
    right = f"{item.shape}  \u00b7  {item.note}" if item.note and not bold else item.shape
    ax.text(x + w, y, right, ha="right", va="center", fontsize=NAME_PT if bold else SMALL_PT,
            fontweight="bold" if bold else "normal", color=TEXT)


def _draw_leaf(ax: Axes, item: _Item, cx: float, top: float) -> None:
    """Box, title line, pill rows, parameters."""
    w, h = item.w - _shadow(item.count), item.h - _shadow(item.count)
    fill, accent = KINDS[item.kind]
    _box(ax, cx - w / 2, top - h, w, h, fill, accent, dashed=False)
    _title(ax, item, cx - w / 2 + PAD, top - PAD - LINE_H / 2, w - 2 * PAD, accent)
    y = top - PAD - LINE_H
    for row in _pill_rows(item.layers):
        x = cx - _row_width(row) / 2
        for label in row:
            _pill(ax, x, y - PILL_H, label)
            x += _pill_width(label) + PILL_GAP
        y -= PILL_H + PILL_GAP
    if item.note:
        ax.text(cx + w / 2 - PAD, y - LINE_H * 0.4, item.note, ha="right", va="center",
                fontsize=SMALL_PT, color=MUTED)


def _pill(ax: Axes, x: float, y: float, label: str, family: str | None = None) -> None:
    fill, edge = FAMILIES[family or _family(label)]
    w = _pill_width(label)
    _box(ax, x, y, w, PILL_H, fill, edge, dashed=False, lw=0.8)
    ax.text(x + w / 2, y + PILL_H / 2, label, ha="center", va="center", fontsize=PILL_PT, color=TEXT)


def _draw_frame(ax: Axes, item: _Item, cx: float, top: float) -> None:
    """Frame and title, then the contents by kind."""
    w, h = item.w - _shadow(item.count), item.h - _shadow(item.count)
    fill, accent = KINDS[item.kind]
    _box(ax, cx - w / 2, top - h, w, h, fill, accent, dashed=item.kind == "sequence")
    _title(ax, item, cx - w / 2 + FRAME_PAD, top - TITLE_H / 2 - 0.02, w - 2 * FRAME_PAD, accent)
    y = top - TITLE_H
    if item.kind == "sequence":
        _arrow(ax, [(cx, y + 0.02), (cx, y - 0.12)])
        _draw_list(ax, item.lists[0], cx, y - 0.12)
    elif item.kind == "residual":
        _draw_residual(ax, item, cx, y, w)
    else:
        _draw_parallel(ax, item, cx, y)


def _draw_residual(ax: Axes, item: _Item, cx: float, y: float, w: float) -> None:
    """Fork dot, body, add node; the skip goes right, down the lane and into the add node."""
    body = item.lists[0]
    fork = y - 0.1
    _dot(ax, cx, fork)
    _arrow(ax, [(cx, fork), (cx, y - SPLIT_H)])
    bottom = _draw_list(ax, body, cx, y - SPLIT_H)
    merge_top = bottom - GAP_Y
    _arrow(ax, [(cx, bottom), (cx, merge_top)])
    merge_w = _draw_merge(ax, item, cx, merge_top)
    if not item.skip:
        return
    lane = cx + w / 2 - FRAME_PAD - (_pill_width(item.skip) + 0.2) / 2
    lane = max(lane, cx + _list_size(body)[0] / 2 + 0.15)
    mid = merge_top - MERGE_H / 2
    _arrow(ax, [(cx, fork), (lane, fork), (lane, mid), (cx + merge_w / 2, mid)])
    label_w = _pill_width(item.skip)
    family = "conv" if item.skip.startswith("projection") else "reshape"
    _pill(ax, lane - label_w / 2, (fork + mid) / 2 - PILL_H / 2, item.skip, family)


def _draw_merge(ax: Axes, item: _Item, cx: float, top: float) -> float:
    """The add or concat node: what merges (and the activation after it), the merged shape."""
    w = _merge_width(item.merge, item.shape)
    fill, accent = KINDS["merge"]
    _box(ax, cx - w / 2, top - MERGE_H, w, MERGE_H, fill, accent, dashed=False)
    ax.text(cx, top - MERGE_H * 0.32, item.merge, ha="center", va="center", fontsize=NAME_PT, fontweight="bold",
            color=accent)
    ax.text(cx, top - MERGE_H * 0.72, item.shape, ha="center", va="center", fontsize=SMALL_PT, color=TEXT)
    return w


def _draw_parallel(ax: Axes, item: _Item, cx: float, y: float) -> None:
    """Branches side by side from a fork bar; each runs down to a join bar above the merge node."""
    sizes = [_list_size(branch) for branch in item.lists]
    total = sum(w for w, _ in sizes) + GAP_X * (len(sizes) - 1)
    fork, start = y - 0.1, y - SPLIT_H
    join = start - max(h for _, h in sizes) - GAP_Y / 2
    centres: list[float] = []
    x = cx - total / 2
    for branch, (bw, _) in zip(item.lists, sizes, strict=True):
        bx = x + bw / 2
        centres.append(bx)
        if branch:
            _arrow(ax, [(bx, fork), (bx, start)])
            _arrow(ax, [(bx, _draw_list(ax, branch, bx, start)), (bx, join)], head=False)
        else:
            _arrow(ax, [(bx, fork), (bx, join)], head=False)
            _pill(ax, bx - bw / 2, (fork + join) / 2 - PILL_H / 2, "identity", "reshape")
        x += bw + GAP_X
    _arrow(ax, [(min(centres), fork), (max(centres), fork)], head=False)
    _arrow(ax, [(min(centres), join), (max(centres), join)], head=False)
    _dot(ax, cx, fork)
    _arrow(ax, [(cx, join), (cx, join - GAP_Y / 2)])
    _draw_merge(ax, item, cx, join - GAP_Y / 2)


def _dot(ax: Axes, x: float, y: float) -> None:
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), 0.035, fc=LINE, ec="none"))


# --- Header --------------------------------------------------------------------------------


def _header_text(spec: Spec, report: ShapeReport) -> str:
    i = spec.input
    convs = sum(1 for s in report.all_blocks if s.kind == "conv")
    return (f"{report.total_params:,} parameters ({_bytes(report.total_params * 4)} as float32)"
            f"  \u00b7  input {i.channels} x {i.height} x {i.width}  \u00b7  {convs} conv block{'s' * (convs != 1)}"
            f"  \u00b7  {_outputs(spec, report)}")


def _bytes(size: int) -> str:
    """1536 -> '1.5 KiB', in the largest unit that keeps the number at least 1."""
    unit = next(u for u in range(3, -1, -1) if size >= 1024**u or u == 0)
    return f"{size / 1024**unit:,.1f} {('KiB', 'MiB', 'GiB')[unit - 1]}" if unit else f"{size} B"


def _legend() -> list[tuple[str, str, str, bool]]:
    """(label, fill, edge, dashed) of each legend entry: the layer families, then the frames."""
    frames = [("sequence", "sequence"), ("residual", "residual"), ("parallel", "parallel"), ("add / concat", "merge")]
    return ([(f, fill, edge, False) for f, (fill, edge) in FAMILIES.items()]
            + [(label, *KINDS[kind], kind == "sequence") for label, kind in frames])


def _header_width(spec: Spec, report: ShapeReport) -> float:
    legend = sum(_text_width(label, 8) + 0.35 for label, *_ in _legend()) + 0.3
    return max(_text_width(_header_text(spec, report), 10), legend)


def _draw_header(ax: Axes, spec: Spec, report: ShapeReport, top: float) -> None:
    """Spec name, totals, and a legend of the layer colours and the frames."""
    ax.text(MARGIN, top - 0.14, spec.name, ha="left", va="center", fontsize=17, fontweight="bold", color=TEXT)
    ax.text(MARGIN, top - 0.46, _header_text(spec, report), ha="left", va="center", fontsize=10, color=MUTED)
    x, y = MARGIN, top - 0.82
    for k, (label, fill, edge, dashed) in enumerate(_legend()):
        x += 0.3 if k == len(FAMILIES) else 0.0  # a gap between the layer families and the frames
        w = _text_width(label, 8) + 0.2
        _box(ax, x, y - 0.09, w, 0.18, fill, edge, dashed=dashed, lw=0.8)
        ax.text(x + w / 2, y, label, ha="center", va="center", fontsize=8, color=TEXT)
        x += w + 0.15
