"""The demo's round table, plots and Markdown report.

Pure formatting and drawing over :class:`RoundRecord` rows and manifest lines; the orchestration decides
what goes in. Plots use matplotlib's Agg backend (no display); overlays are drawn with PIL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from alp.demo.state import RoundRecord
from alp.manifest import ManifestLine
from alp.schema import V_OCCLUDED, V_VISIBLE, KeypointSchema

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("round", "round"), ("images_seen", "seen"), ("auto", "auto"), ("human", "human"), ("audit", "audit"),
    ("quarantine", "quar."), ("deferred", "deferred"), ("human_labels_total", "labels"),
    ("auto_share_persons", "auto persons"), ("auto_share_heads", "auto heads"),
    ("auto_precision_truth", "auto prec."), ("audit_precision_low95", "audit low95"),
    ("human_seconds_ratio", "human s/by hand"),
    ("box_map50", "box_map50"), ("kpt_oks_map50", "kpt_oks_map50"), ("visibility_accuracy", "vis_acc"),
    ("seconds", "seconds"), ("approved", "gate"),
)
# the automation figures per round (alp/automation.py), with their names on the plot
_AUTOMATION = (("auto_share_persons", "persons auto-accepted (share)"),
               ("auto_share_heads", "head-box tasks auto-accepted (share)"),
               ("auto_precision_truth", "auto-accepted parts right, by the truth"),
               ("audit_precision_low95", "audited precision, 95% lower bound"),
               ("human_seconds_ratio", "people's seconds / all by hand"))
# the frozen test set's metrics, with their names on the plots
_METRICS = (("box_map50", "head box mAP50"), ("kpt_oks_map50", "keypoint OKS mAP50"),
            ("visibility_accuracy", "visibility accuracy"))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "approved" if value else "rejected"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[RoundRecord]) -> str:
    """A fixed-width text table, one line per round."""
    header = [title for _, title in TABLE_COLUMNS]
    body = [[_cell(getattr(r, key)) for key, _ in TABLE_COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def markdown_table(rows: Sequence[RoundRecord]) -> str:
    header = [title for _, title in TABLE_COLUMNS]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(getattr(r, key)) for key, _ in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(out)


def improvement_note(rows: Sequence[RoundRecord]) -> str:
    """One sentence on how the test metrics moved from the first to the last round."""
    if len(rows) < 2:
        return "Only one round so far: no trend yet."
    first, last = rows[0], rows[-1]
    parts = []
    for key, _ in _METRICS:
        a, b = getattr(first, key), getattr(last, key)
        if a is not None and b is not None:
            parts.append(f"{key} {a:.3f} -> {b:.3f} ({b - a:+.3f})")
    trend = "; ".join(parts) or "no comparable metrics"
    return (f"From round {first.round} to round {last.round} ({first.human_labels_total} -> "
            f"{last.human_labels_total} human labels): {trend}.")


# --- plots -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _figure(path: Path, title: str) -> Iterator[Any]:
    """One matplotlib axes (Agg, no display), saved to ``path`` with ``title`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    try:
        yield ax
        ax.set_title(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_learning_curves(rows: Sequence[RoundRecord], path: Path) -> Path:
    """Test metrics against the human labels used so far (one marker per round)."""
    with _figure(path, "Learning curves") as ax:
        for key, label in _METRICS:
            pts = [(r.human_labels_total, getattr(r, key), r.round) for r in rows if getattr(r, key) is not None]
            if not pts:
                continue
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", label=label)
            for x, y, rnd in pts:
                ax.annotate(f"r{rnd}", (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
        ax.set_xlabel("images labeled by people (cumulative)")
        ax.set_ylabel("score on the frozen test set")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    return path


def plot_routes_per_round(rows: Sequence[RoundRecord], path: Path) -> Path:
    """Stacked bars: images routed auto / human / audit / quarantine / deferred per round."""
    with _figure(path, "Where each round's images went (human + audit = labels paid for)") as ax:
        xs = [r.round for r in rows]
        bottom = [0] * len(rows)
        colours = {"auto": "#4c9f70", "human": "#d1495b", "audit": "#edae49", "quarantine": "#555555",
                   "deferred": "#9aa5b1"}
        for key, colour in colours.items():
            vals = [getattr(r, key) for r in rows]
            ax.bar(xs, vals, bottom=bottom, color=colour, label=key)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xlabel("round (0 = cold start: random seed set labeled by people)")
        ax.set_ylabel("images")
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
    return path


def plot_automation(rows: Sequence[RoundRecord], path: Path, target: float | None = None) -> Path:
    """Automation share, precision and people's effort per round (lines; a round without a figure is skipped)."""
    with _figure(path, "Automation per round") as ax:
        for key, label in _AUTOMATION:
            pts = [(r.round, getattr(r, key)) for r in rows if getattr(r, key) is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
        if target is not None:
            ax.axhline(target, color="#888888", linestyle="--", linewidth=1, label=f"target precision {target}")
        ax.set_xlabel("round")
        ax.set_ylabel("share")
        ax.set_xticks([r.round for r in rows])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return path


# --- overlays ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overlay:
    """An image with what the model proposed and why it was routed where it was."""

    image_path: Path
    line: ManifestLine
    caption: str


_V_COLOURS = {V_VISIBLE: (40, 220, 90), V_OCCLUDED: (250, 190, 40)}


def draw_overlay(overlay: Overlay, schema: KeypointSchema, head_attr: str, kp_attr: str,
                 *, scale: int = 2) -> Image.Image:
    """The image with head boxes (red) and keypoints (green visible, amber occluded) and a caption.

    Reads the proposal from the line's labels when present (auto-labeled lines), else from its
    pre-annotation (lines routed to people).
    """
    img = Image.open(overlay.image_path).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale))
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[float, float, float, float]] = []
    persons = []
    labelled = overlay.line.boxes(head_attr)
    if labelled is not None:
        boxes = [a.xyxy for a in labelled[0].annotations]
    kp = overlay.line.keypoints(kp_attr)
    if kp is not None:
        persons = kp[0].persons
    pre = overlay.line.preannotation()
    if pre is not None and not boxes and not persons:
        boxes = [(b.left, b.top, b.left + b.width, b.top + b.height) for b in pre.boxes]
        persons = pre.persons
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale, y1 * scale], outline=(230, 40, 40), width=2)
    for person in persons:
        pts = person.keypoints
        for a, b in schema.skeleton_idx:
            if a < len(pts) and b < len(pts) and pts[a].v > 0 and pts[b].v > 0:
                draw.line([pts[a].x * scale, pts[a].y * scale, pts[b].x * scale, pts[b].y * scale],
                          fill=(120, 160, 255), width=1)
        for k in pts:
            if k.v > 0:
                r = 3
                draw.ellipse([k.x * scale - r, k.y * scale - r, k.x * scale + r, k.y * scale + r],
                             fill=_V_COLOURS.get(k.v, (200, 200, 200)))
    band = 16 * (1 + overlay.caption.count("\n"))
    framed = Image.new("RGB", (img.width, img.height + band), (255, 255, 255))
    framed.paste(img, (0, 0))
    ImageDraw.Draw(framed).multiline_text((4, img.height + 2), overlay.caption, fill=(0, 0, 0))
    return framed


def overlay_grid(overlays: Sequence[Overlay], path: Path, schema: KeypointSchema, head_attr: str, kp_attr: str,
                 *, columns: int = 3) -> Path | None:
    """A grid of overlays in one PNG; None when there is nothing to draw."""
    tiles = [draw_overlay(o, schema, head_attr, kp_attr) for o in overlays]
    if not tiles:
        return None
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    cols = min(columns, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w + (cols - 1) * 6, rows * h + (rows - 1) * 6), (235, 235, 235))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * (w + 6), (i // cols) * (h + 6)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


# --- the report -----------------------------------------------------------------------------------------
NO_AUTO_LABELS = (
    "None in these rounds: no image passed the judgement's checks (boxes at `judgement.box_threshold`, "
    "keypoint certainty at `judgement.keypoint_threshold`, heads and persons pairing up; every line of a "
    "batch's `inference/` manifests carries its score under `alp-route`), so people labeled every image. "
    "Young models are not confident enough yet; more rounds or epochs raise their confidence (a new run: "
    "`alp demo --fresh --rounds 6 --epochs 15`, about three times the default's time). `alp demo --human-share 0.5` caps people's share per round: the images the judgement "
    "doubts beyond that budget wait for a later round."
)


def write_report(rows: Sequence[RoundRecord], report_dir: Path, *, title: str, notes: Sequence[str],
                 auto_overlays: Sequence[Overlay], human_overlays: Sequence[Overlay], schema: KeypointSchema,
                 head_attr: str, kp_attr: str, target_precision: float | None = None) -> Path:
    """``report.md`` plus its PNGs in ``report_dir``; returns the Markdown file's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    curves = plot_learning_curves(rows, report_dir / "learning_curves.png")
    routes = plot_routes_per_round(rows, report_dir / "labels_per_round.png")
    automation = plot_automation(rows, report_dir / "automation_per_round.png", target_precision)
    auto_png = overlay_grid(auto_overlays, report_dir / "overlays_auto.png", schema, head_attr, kp_attr)
    human_png = overlay_grid(human_overlays, report_dir / "overlays_human.png", schema, head_attr, kp_attr)
    parts = [f"# {title}", "", "\n\n".join(notes), "", "## Rounds", "", markdown_table(rows), "",
             "## Learning curves", "", f"![learning curves]({curves.name})", "",
             "## Human labels per round", "", f"![routes per round]({routes.name})", "",
             "## Automation per round", "",
             "Parts the model labeled (a person's keypoints; an image's head boxes), how often they were right (by "
             "the truth, and the audits' 95% lower bound), and people's seconds against labeling everything by hand "
             "(docs/effort.md).", "", f"![automation per round]({automation.name})", ""]
    parts += ["## Auto-labeled images (labels written by the model)", ""]
    if auto_png:
        parts += [f"![auto]({auto_png.name})", ""]
    else:
        parts += [NO_AUTO_LABELS, ""]
    if human_png:
        parts += ["## Images routed to people, with the reason", "", f"![human]({human_png.name})", ""]
    path = report_dir / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
