"""A picture of a spec's architecture: input -> one box per block -> flatten -> classifier.

Each box lists its layers as coloured pills (one colour per layer family), draws its output
as a small tensor (a cuboid whose face grows with the log of the spatial size and whose depth
grows with the log of the channels) and ends with the output shape and the parameter count,
with a bar showing the block's share of all parameters. Long networks wrap into rows.
Pure matplotlib (no pyplot, no torch); the file suffix picks PNG or SVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from builder.lang.errors import BuilderError
from builder.lang.shapes import BlockShape, ShapeReport, infer
from builder.lang.spec import Spec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SUFFIXES = (".png", ".svg")
DPI = 150

# Layout, in inches (the axes use inches as data units, so text sizes in points are predictable).
MARGIN, HEADER_H = 0.35, 1.05
PAD, TITLE_H, GLYPH_H = 0.14, 0.34, 1.0
PILL_H, PILL_GAP, FOOT_H = 0.22, 0.06, 0.66
GAP_X, GAP_Y, MIN_BOX_W = 0.55, 0.75, 1.9
MAX_PER_ROW = 6

TEXT, MUTED, TRACK = "#222831", "#5f6b7a", "#e6e9ee"
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
# (box fill, accent) of each kind of box; the accent draws the border, title and tensor.
KINDS: dict[str, tuple[str, str]] = {
    "input": ("#f6f7f9", "#6b7785"),
    "block": ("#f5f9fe", "#3b6ea8"),
    "flatten": ("#f3fbfa", "#2e8b84"),
    "classifier": ("#fef7f7", "#b84a4a"),
}


@dataclass(frozen=True)
class _Node:
    """One box: `tensor` is the (C, H, W) output of an input or block, else vector sizes."""

    kind: str
    title: str
    layers: tuple[str, ...]
    shape: str
    note: str
    params: int | None
    tensor: tuple[int, ...]

    @property
    def cuboid(self) -> bool:
        """Whether the output is an image-like tensor (drawn as a cuboid) rather than vectors."""
        return self.kind in ("input", "block")

    @property
    def height(self) -> float:
        return 2 * PAD + TITLE_H + GLYPH_H + len(self.layers) * (PILL_H + PILL_GAP) + FOOT_H


@dataclass(frozen=True)
class _Scale:
    """Largest sizes in the picture, so every tensor glyph is drawn on the same log scale."""

    spatial: int
    channels: int
    vector: int
    total_params: int


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
    nodes = _nodes(spec, report, report.flatten)
    fig = _figure(spec, report, nodes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=suffix[1:], dpi=DPI, facecolor="white")
    return path


# --- What to draw --------------------------------------------------------------------------


def _nodes(spec: Spec, report: ShapeReport, flat: int) -> list[_Node]:
    """Input, one node per block, flatten and classifier, in forward order."""
    c, h, w = spec.input.channels, spec.input.height, spec.input.width
    first = _Node("input", "input", (), _shape((c, h, w)), "image", None, (c, h, w))
    return [first, *(_block_node(b) for b in report.blocks), _flatten_node(spec, report, flat),
            _classifier_node(spec, report, flat)]


def _block_node(block: BlockShape) -> _Node:
    return _Node("block", block.name, block.layers, _shape(block.out_shape), "", block.params, block.out_shape)


def _flatten_node(spec: Spec, report: ShapeReport, flat: int) -> _Node:
    """The flatten, after the adaptive pool when there is one; notes the shape it flattens."""
    c, h, w = report.blocks[-1].out_shape
    pool = spec.classifier.adaptive_pool
    layers = (f"adaptive avgpool {pool[0]}x{pool[1]}", "flatten") if pool else ("flatten",)
    source = (c, pool[0], pool[1]) if pool else (c, h, w)
    return _Node("flatten", "flatten", layers, f"{flat:,}", f"= {_shape(source)}", 0, (flat,))


def _classifier_node(spec: Spec, report: ShapeReport, flat: int) -> _Node:
    head = spec.classifier
    sizes = [*head.hidden, spec.num_classes]
    classes = f"{spec.num_classes} class{'es' * (spec.num_classes > 1)}"
    return _Node("classifier", "classifier", _classifier_layers(spec, flat), classes, "",
                 report.classifier_params, tuple(sizes))


def _classifier_layers(spec: Spec, flat: int) -> tuple[str, ...]:
    """Layer labels in build_classifier's order: [dropout] linear act [dropout] ..., linear."""
    head = spec.classifier
    sizes = [flat, *head.hidden]
    drop = [f"dropout {head.dropout:g}"] if head.dropout else []
    act = [head.activation] if head.activation != "none" else []
    layers: list[str] = []
    for a, b in pairwise(sizes):
        before, after = (drop, []) if head.dropout_position == "before" else ([], drop)
        layers += [*before, f"linear {a:,} \u2192 {b:,}", *act, *after]
    return (*layers, f"linear {sizes[-1]:,} \u2192 {spec.num_classes:,}")


def _family(label: str) -> str:
    """The colour family of a layer label, by its first word."""
    word = label.split()[0]
    named = {"conv": "conv", "batchnorm": "norm", "lrn": "norm", "maxpool": "pool", "avgpool": "pool",
             "adaptive": "pool", "flatten": "reshape", "linear": "linear", "dropout": "dropout"}
    return named.get(word, "activation")


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


# --- Layout --------------------------------------------------------------------------------


def _rows(count: int) -> list[range]:
    """Balanced rows of at most MAX_PER_ROW boxes (8 boxes -> 4 + 4, not 6 + 2)."""
    per_row = math.ceil(count / math.ceil(count / MAX_PER_ROW))
    return [range(i, min(i + per_row, count)) for i in range(0, count, per_row)]


def _box_width(nodes: list[_Node]) -> float:
    """One width for every box: enough for the widest pill, title or shape line."""
    widest = max(
        max((_text_width(s, 8.5) + 0.2 for n in nodes for s in n.layers), default=0.0),
        max(_text_width(n.shape, 10.5, bold=True) for n in nodes),
        max(_text_width(_params_text(n, 10**9), 8) for n in nodes),
    )
    return max(MIN_BOX_W, widest + 2 * PAD + 0.1)


def _text_width(text: str, size: float, bold: bool = False) -> float:
    """Rendered width of `text` in inches, from the font's advance widths (no renderer needed)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    return float(text_to_path.get_text_width_height_descent(text, prop, ismath=False)[0]) / 72


# --- Rendering -----------------------------------------------------------------------------


def _figure(spec: Spec, report: ShapeReport, nodes: list[_Node]) -> Figure:
    """The whole diagram as a matplotlib Figure (not registered with pyplot)."""
    from matplotlib.figure import Figure

    rows, width = _rows(len(nodes)), _box_width(nodes)
    row_heights = [max(nodes[i].height for i in row) for row in rows]
    fig_w = 2 * MARGIN + len(rows[0]) * width + (len(rows[0]) - 1) * GAP_X
    fig_w = max(fig_w, 2 * MARGIN + _header_width(spec, report))
    fig_h = 2 * MARGIN + HEADER_H + sum(row_heights) + (len(rows) - 1) * GAP_Y
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(0, fig_h)
    ax.axis("off")
    _draw_header(ax, spec, report, fig_h - MARGIN)
    scale = _scale(nodes, report.total_params)
    _draw_rows(ax, nodes, rows, row_heights, width, fig_h - MARGIN - HEADER_H, scale)
    return fig


def _scale(nodes: list[_Node], total_params: int) -> _Scale:
    cuboids = [n.tensor for n in nodes if n.cuboid]
    vectors = [s for n in nodes if not n.cuboid for s in n.tensor]
    return _Scale(max(max(t[1:]) for t in cuboids), max(t[0] for t in cuboids), max(vectors), total_params)


def _draw_rows(ax: Axes, nodes: list[_Node], rows: list[range], heights: list[float], width: float,
               top: float, scale: _Scale) -> None:
    """Boxes row by row, top-aligned; arrows between neighbours and from each row to the next."""
    anchors: list[tuple[float, float, float]] = []  # (left x, top y, bottom y) of each box
    for row, height in zip(rows, heights, strict=True):
        for col, i in enumerate(row):
            x = MARGIN + col * (width + GAP_X)
            _draw_node(ax, nodes[i], x, top, width, scale)
            anchors.append((x, top, top - nodes[i].height))
        top -= height + GAP_Y
    for i in range(1, len(nodes)):
        (x0, t0, b0), (x1, t1, _) = anchors[i - 1], anchors[i]
        if t0 == t1:
            y = t0 - PAD - TITLE_H - GLYPH_H / 2  # level with the tensor glyphs
            _arrow(ax, [(x0 + width, y), (x1, y)])
        else:  # wrap: down from the row's last box, back left, down into the next row
            mid = t1 + GAP_Y / 2
            _arrow(ax, [(x0 + width / 2, b0), (x0 + width / 2, mid), (x1 + width / 2, mid), (x1 + width / 2, t1)])


def _arrow(ax: Axes, points: list[tuple[float, float]]) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1)
    ax.add_patch(FancyArrowPatch(path=MplPath(points, codes), arrowstyle="-|>,head_length=6,head_width=3.5",
                                 color=MUTED, lw=1.4, shrinkA=2, shrinkB=2, joinstyle="round"))


def _draw_node(ax: Axes, node: _Node, x: float, top: float, width: float, scale: _Scale) -> None:
    """One rounded box: title, tensor glyph, layer pills, output shape and parameters."""
    from matplotlib.patches import FancyBboxPatch

    fill, accent = KINDS[node.kind]
    ax.add_patch(FancyBboxPatch((x, top - node.height), width, node.height, boxstyle="round,pad=0,rounding_size=0.12",
                                fc=fill, ec=accent, lw=1.5))
    ax.text(x + width / 2, top - PAD - TITLE_H / 2, node.title, ha="center", va="center",
            fontsize=11, fontweight="bold", color=accent)
    glyph_mid = (x + width / 2, top - PAD - TITLE_H - GLYPH_H / 2)
    if node.cuboid:
        _draw_cuboid(ax, glyph_mid, node.tensor, accent, scale)
    else:
        _draw_bars(ax, glyph_mid, node.tensor, accent, scale)
    y = top - PAD - TITLE_H - GLYPH_H
    for label in node.layers:
        _draw_pill(ax, x + PAD, y - PILL_H, width - 2 * PAD, label)
        y -= PILL_H + PILL_GAP
    _draw_footer(ax, node, x, y, width, scale, accent)


def _draw_pill(ax: Axes, x: float, y: float, width: float, label: str) -> None:
    from matplotlib.patches import FancyBboxPatch

    fill, edge = FAMILIES[_family(label)]
    ax.add_patch(FancyBboxPatch((x, y), width, PILL_H, boxstyle="round,pad=0,rounding_size=0.07",
                                fc=fill, ec=edge, lw=0.9))
    ax.text(x + width / 2, y + PILL_H / 2, label, ha="center", va="center", fontsize=8.5, color=TEXT)


def _draw_footer(ax: Axes, node: _Node, x: float, top: float, width: float, scale: _Scale, accent: str) -> None:
    """Output shape (bold), parameters (or a note) and a bar of the share of all parameters."""
    from matplotlib.patches import Rectangle

    mid, y = x + width / 2, top - 0.04
    ax.plot([x + PAD, x + width - PAD], [y, y], color=TRACK, lw=1)
    ax.text(mid, y - 0.17, node.shape, ha="center", va="center", fontsize=10.5, fontweight="bold", color=TEXT)
    ax.text(mid, y - 0.38, _params_text(node, scale.total_params), ha="center", va="center", fontsize=8, color=MUTED)
    if node.params:
        bar_w = width - 2 * PAD
        ax.add_patch(Rectangle((x + PAD, y - 0.55), bar_w, 0.05, fc=TRACK, lw=0))
        ax.add_patch(Rectangle((x + PAD, y - 0.55), bar_w * node.params / scale.total_params, 0.05, fc=accent, lw=0))


def _params_text(node: _Node, total: int) -> str:
    if node.params is None:
        return node.note
    if not node.params:
        return f"{node.note}, no parameters" if node.note else "no parameters"
    share = 100 * node.params / total
    return f"{node.params:,} params \u00b7 {f'{share:.1f}%' if share >= 0.05 else '<0.1%'}"


def _draw_cuboid(ax: Axes, mid: tuple[float, float], chw: tuple[int, ...], color: str, scale: _Scale) -> None:
    """A C x H x W tensor as a cuboid: face ~ log(H), log(W); depth ~ log(C)."""
    from matplotlib.patches import Polygon

    c, h, w = chw
    face_h, face_w = (0.12 + 0.58 * _log_share(s, scale.spatial) for s in (h, w))
    depth = 0.05 + 0.36 * _log_share(c, scale.channels)
    dx, dy = depth * 0.8, depth * 0.45  # the receding edge, drawn up and to the right
    x0, y0 = mid[0] - (face_w + dx) / 2, mid[1] - (face_h + dy) / 2
    front = [(x0, y0), (x0 + face_w, y0), (x0 + face_w, y0 + face_h), (x0, y0 + face_h)]
    top = [front[3], front[2], (front[2][0] + dx, front[2][1] + dy), (front[3][0] + dx, front[3][1] + dy)]
    side = [front[1], (front[1][0] + dx, front[1][1] + dy), top[2], front[2]]
    for points, alpha in ((side, 0.55), (top, 0.3), (front, 0.8)):
        ax.add_patch(Polygon(points, closed=True, fc=color, alpha=alpha, ec="white", lw=0.8))


def _draw_bars(ax: Axes, mid: tuple[float, float], sizes: tuple[int, ...], color: str, scale: _Scale) -> None:
    """Vectors (the flatten, the classifier's layers) as upright bars, height ~ log(size)."""
    from matplotlib.patches import FancyBboxPatch

    bar_w, gap = 0.1, 0.1
    x = mid[0] - (len(sizes) * bar_w + (len(sizes) - 1) * gap) / 2
    for size in sizes:
        height = 0.12 + 0.7 * _log_share(size, scale.vector)
        ax.add_patch(FancyBboxPatch((x, mid[1] - height / 2), bar_w, height, boxstyle="round,pad=0,rounding_size=0.03",
                                    fc=color, alpha=0.75, ec="none"))
        x += bar_w + gap


def _log_share(value: int, largest: int) -> float:
    """log(value) / log(largest), in [0, 1]; 1 when everything has size 1."""
    return math.log(value) / math.log(largest) if largest > 1 else 1.0


def _header_text(spec: Spec, report: ShapeReport) -> str:
    i, n = spec.input, len(spec.blocks)
    return (f"{report.total_params:,} parameters ({_bytes(report.total_params * 4)} as float32)"
            f"  \u00b7  input {i.channels} x {i.height} x {i.width}  \u00b7  {n} conv block{'s' * (n > 1)}"
            f"  \u00b7  {spec.num_classes} class{'es' * (spec.num_classes > 1)}")


def _bytes(size: int) -> str:
    """1536 -> '1.5 KiB', in the largest unit that keeps the number at least 1."""
    unit = next(u for u in range(3, -1, -1) if size >= 1024**u or u == 0)
    return f"{size / 1024**unit:,.1f} {('KiB', 'MiB', 'GiB')[unit - 1]}" if unit else f"{size} B"


def _header_width(spec: Spec, report: ShapeReport) -> float:
    legend = sum(_text_width(f, 8) + 0.35 for f in FAMILIES)
    return max(_text_width(_header_text(spec, report), 10), legend)


def _draw_header(ax: Axes, spec: Spec, report: ShapeReport, top: float) -> None:
    """Spec name, totals, and a legend of the layer colours."""
    from matplotlib.patches import FancyBboxPatch

    ax.text(MARGIN, top - 0.14, spec.name, ha="left", va="center", fontsize=17, fontweight="bold", color=TEXT)
    ax.text(MARGIN, top - 0.46, _header_text(spec, report), ha="left", va="center", fontsize=10, color=MUTED)
    x, y = MARGIN, top - 0.82
    for family, (fill, edge) in FAMILIES.items():
        w = _text_width(family, 8) + 0.2
        ax.add_patch(FancyBboxPatch((x, y - 0.09), w, 0.18, boxstyle="round,pad=0,rounding_size=0.06",
                                    fc=fill, ec=edge, lw=0.8))
        ax.text(x + w / 2, y, family, ha="center", va="center", fontsize=8, color=TEXT)
        x += w + 0.15
