"""The report job (``ddsem report``): figures and tables of the semantics a set stores.

PR curves of the distilled images that best find an attribute (paper Fig. 9), each distilled
image beside the 3x3 grid of its most influenced test images (Fig. 10), and a Table-1-style
summary of each image's most predictive attributes (Markdown and CSV), from the scores
``ddsem rank`` stored. Table 1 marks the attributes whose stored q-value (Benjamini-Hochberg over
the scores of the rank run) is below ``alpha``; the PR curves are judged as ``ddsem query``
judges the question (family: the N distilled images), with the chance AP drawn as the baseline.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.errors import UserError
from ddsem.jobs.common import at_least, check
from ddsem.jobs.influence import check_estimator
from ddsem.jobs.judging import ALPHA, DRAWS, check_alpha, check_draws, format_p, format_q
from ddsem.jobs.query import score_question
from ddsem.jobs.semantic_inputs import SEED_OR_MEAN, RankingInputs, load_ranking_inputs
from ddsem.semantics import (
    ESTIMATOR_TEXT,
    ParsedQuery,
    Vocabulary,
    parse_query,
    precision_recall_curve,
    query_columns,
    rank_for_query,
)

if TYPE_CHECKING:
    from ddsem.db.scores import ScoreRow
    from ddsem.jobs.workspace import Workspace

GRID_PHASE = "drawing influence grids"
TABLE_COLUMNS = [
    "distilled_index", "class", "rank", "attribute", "among", "ap", "lift", "positive_rate",
    "positives", "chance_ap", "p_value", "q_value", "significant",
]  # fmt: skip
MARK = "*"  # Table 1: q < alpha


@dataclass(frozen=True)
class ReportRequest:
    out: str  # folder for the figures and tables (created)
    set_name: str | None = None
    method: str | None = None
    seed: int | None = None  # the run of this seed; None: not chosen (the only run, or the mean)
    mean_over_seeds: bool = False
    question: str | None = None  # PR curves for this question; None: the most significant pair
    top: int = 5  # distilled images drawn in the PR curves
    attributes_per_image: int = 3  # attributes listed per distilled image in the table
    min_positives: int = 5  # table (and default question): attributes with this many positives
    alpha: float = ALPHA  # marked significant: q < alpha
    draws: int = DRAWS  # the PR curves' question: the most null draws
    estimator: str = "loo"  # whose influence: exact LOO, or an approximation (if, tracin, trak)

    def __post_init__(self) -> None:
        check(
            self.top >= 1 and self.attributes_per_image >= 1,
            "--top and --attributes-per-image must be at least 1",
        )
        at_least(self.min_positives, 1, "--min-positives")
        check(not (self.seed is not None and self.mean_over_seeds), SEED_OR_MEAN)
        check_alpha(self.alpha)
        check_draws(self.draws)
        check_estimator(self.estimator)


@dataclass
class ReportPlan:
    out_dir: Path
    inputs: RankingInputs
    scores: list[ScoreRow]  # the stored scores of the scope
    parsed: ParsedQuery  # the question of the PR curves
    members: np.ndarray  # (T,) bool: test images in the question's class filter
    positives: np.ndarray  # (T,) bool: those of them that answer it


@dataclass
class TableRow:
    """One line of Table 1: a distilled image's ``rank``-th most predictive attribute."""

    distilled_index: int
    class_name: str
    rank: int  # 1-based
    score: ScoreRow
    significant: bool = False  # stored q < alpha


@dataclass
class ReportResult:
    out_dir: Path
    set_name: str
    method: str
    scope: str
    attributes: str  # what the PR curves are for: "yellow" or "yellow & red"
    among: str  # a class name or "all classes"
    pr_curves: Path
    curves: list[str]  # the label of each curve drawn
    influence_dir: Path
    grids: list[Path] = field(default_factory=list)
    table_csv: Path | None = None
    table_md: Path | None = None
    table_rows: int = 0
    table_significant: int = 0  # rows of Table 1 at q < alpha
    alpha: float = ALPHA
    curves_significant: int = 0  # distilled images of the question at q < alpha (of all N)

    @property
    def written(self) -> list[Path]:
        """Every file written, the PR curves first."""
        tables = [p for p in (self.table_csv, self.table_md) if p is not None]
        return [self.pr_curves, *self.grids, *tables]

    def as_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out_dir),
            "set": self.set_name,
            "method": self.method,
            "scope": self.scope,
            "attribute": self.attributes,
            "among": self.among,
            "pr_curves": str(self.pr_curves),
            "curves": self.curves,
            "influence_grids": len(self.grids),
            "influence_dir": str(self.influence_dir),
            "table_csv": str(self.table_csv) if self.table_csv else None,
            "table_md": str(self.table_md) if self.table_md else None,
            "table_rows": self.table_rows,
            "table_significant": self.table_significant,
            "alpha": self.alpha,
            "curves_significant": self.curves_significant,
        }


def plan(ws: Workspace, request: ReportRequest) -> ReportPlan:
    """The inputs, the stored scores and the question of the PR curves (reads only)."""
    from ddsem.db.scores import read_scores

    out_dir = Path(request.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out must be a folder; {out_dir} is a file")
    inputs = load_ranking_inputs(
        ws.db,
        set_name=request.set_name,
        method=request.method,
        seed=request.seed,
        mean_over_seeds=request.mean_over_seeds,
        estimator=request.estimator,
    )
    scores = read_scores(ws.db, inputs.set_id, inputs.scope, context=inputs.context)
    if not scores:
        raise UserError(
            f"no scores for set {inputs.set_name!r} at scope {inputs.scope}: run "
            f"`ddsem rank --set {inputs.set_name} {inputs.scope_option()}` first"
        )
    if request.question:
        parsed = parse_query(request.question, Vocabulary(inputs.attributes, inputs.classes))
    else:
        parsed = strongest_pair(scores, inputs.classes, request.min_positives, request.alpha)
    members, positives = query_columns(
        inputs.labels, inputs.test_classes, inputs.attribute_names, parsed
    )
    return ReportPlan(out_dir, inputs, scores, parsed, members, positives)


def run(ws: Workspace, request: ReportRequest) -> ReportResult:
    """Write the PR curves, one influence grid per distilled image and Table 1."""
    from ddsem.db.codec import png_to_array
    from ddsem.db.scores import image_pngs
    from ddsem.db.sets import set_pngs
    from ddsem.semantic_plots import influence_grid, pr_curves

    p = plan(ws, request)
    inputs, out_dir = p.inputs, p.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    # Fig. 9: PR curves of the distilled images whose ranking best finds the attribute
    ranking = rank_for_query(inputs.influence, p.members, p.positives, top=request.top)
    judged = score_question(
        inputs, p.members, p.positives, alpha=request.alpha, draws=request.draws
    )
    curves = []
    for k in ranking.order:
        recall, precision = precision_recall_curve(
            inputs.influence[k, p.members], p.positives[p.members]
        )
        label = inputs.classes[int(inputs.distilled_labels[k])]
        mark = f" {MARK}" if judged.significant[k] else ""
        text = (
            f"distilled #{k} ({label}) AP {ranking.ap[k]:.3f}, "
            f"p {format_p(float(judged.p[k]), judged.draws)}, q {format_q(float(judged.q[k]))}"
        )
        curves.append((text + mark, recall, precision))
    what = " & ".join(p.parsed.attributes)
    among = p.parsed.class_name or "all classes"
    pr_path = pr_curves(
        curves,
        judged.chance_ap,
        f"{what} among {among} ({inputs.set_name}, {inputs.scope})\n"
        f"{MARK} q < {request.alpha:g} (Benjamini-Hochberg over the {len(judged.ap)} distilled "
        "images)",
        out_dir / f"pr_{slug(what)}_{slug(among)}.png",
    )

    # Fig. 10: each distilled image beside its 9 most influenced test images
    n = inputs.influence.shape[0]
    top9 = np.argsort(-inputs.influence, axis=1, kind="stable")[:, :9]
    pngs = image_pngs(ws.db, inputs.image_ids[top9].ravel().tolist())
    distilled = {i: png for i, _, png in set_pngs(ws.db, inputs.set_id)}
    grids: list[Path] = []
    with ws.progress.phase(GRID_PHASE, n) as advance:
        for k in range(n):
            cols = top9[k].tolist()
            ids = [int(inputs.image_ids[j]) for j in cols]
            tiles = [png_to_array(pngs[i]) if i in pngs else None for i in ids]
            titles = [
                f"#{int(inputs.test_indices[j])} {inputs.classes[int(inputs.test_classes[j])]}\n"
                f"{inputs.influence[k, j]:+.3g}"
                for j in cols
            ]
            label = inputs.classes[int(inputs.distilled_labels[k])]
            grids.append(
                influence_grid(
                    png_to_array(distilled[k]),
                    f"distilled #{k} ({label})",
                    tiles,
                    titles,
                    out_dir / "influence" / f"distilled_{k:03d}.png",
                )
            )
            advance(1)

    # Table 1: each distilled image's most predictive attributes within its class (by q, then
    # lift), the significant ones marked
    has_within, rows = table1_rows(
        p.scores,
        inputs.distilled_labels,
        inputs.classes,
        per_image=request.attributes_per_image,
        min_positives=request.min_positives,
        alpha=request.alpha,
    )
    csv_path = out_dir / "table1.csv"
    write_table1_csv(csv_path, rows, inputs.classes)
    md_path = out_dir / "table1.md"
    md_path.write_text(
        table1_markdown(
            rows,
            inputs,
            has_within=has_within,
            min_positives=request.min_positives,
            alpha=request.alpha,
            family=family_size(p.scores),
        ),
        encoding="utf-8",
    )
    return ReportResult(
        out_dir=out_dir,
        set_name=inputs.set_name,
        method=inputs.method,
        scope=inputs.scope,
        attributes=what,
        among=among,
        pr_curves=pr_path,
        curves=[c[0] for c in curves],
        influence_dir=out_dir / "influence",
        grids=grids,
        table_csv=csv_path,
        table_md=md_path,
        table_rows=len(rows),
        table_significant=sum(r.significant for r in rows),
        alpha=request.alpha,
        curves_significant=int(judged.significant.sum()),
    )


# -- pieces, as pure functions --------------------------------------------------------------------


def slug(text: str) -> str:
    """ "yellow & red" -> "yellow-red" (file names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "all"


def _q_key(row: ScoreRow) -> float:
    """A stored q-value for sorting (scores stored before significance: last)."""
    return row.q_value if row.q_value is not None else float("inf")


def is_significant(row: ScoreRow, alpha: float) -> bool:
    return row.q_value is not None and row.q_value < alpha


def strongest_pair(
    scores: Sequence[ScoreRow], classes: Sequence[str], min_positives: int, alpha: float = ALPHA
) -> ParsedQuery:
    """The default question of the PR curves: the stored (attribute, class filter) of the
    lowest q, then highest lift (AP / chance AP), among attributes with ``min_positives``
    positives when there are any."""
    candidates = [r for r in scores if r.positives >= min_positives] or list(scores)
    best = min(candidates, key=lambda r: (_q_key(r), -r.lift, r.distilled_index))
    class_name = classes[best.class_filter] if best.class_filter >= 0 else None
    return ParsedQuery(
        text=f"{best.attribute} {class_name or ''}".strip(),
        attributes=[best.attribute],
        class_index=best.class_filter if best.class_filter >= 0 else None,
        class_name=class_name,
    )


def table1_rows(
    scores: Sequence[ScoreRow],
    distilled_labels: np.ndarray,
    classes: Sequence[str],
    *,
    per_image: int,
    min_positives: int,
    alpha: float = ALPHA,
) -> tuple[bool, list[TableRow]]:
    """(within its class?, rows): each distilled image's ``per_image`` attributes of lowest
    q, then highest lift (AP / chance AP), ranked within its own class when within-class scores
    are stored, else over all; each marked significant when q < alpha."""
    has_within = any(r.class_filter >= 0 for r in scores)
    by_image: dict[int, list[ScoreRow]] = {}
    for r in scores:
        own = int(distilled_labels[r.distilled_index])
        if r.positives >= min_positives and r.class_filter == (own if has_within else -1):
            by_image.setdefault(r.distilled_index, []).append(r)
    rows = []
    for k in range(len(distilled_labels)):
        ranked = sorted(by_image.get(k, []), key=lambda r: (_q_key(r), -r.lift, r.attribute))
        for i, r in enumerate(ranked[:per_image]):
            rows.append(
                TableRow(k, classes[int(distilled_labels[k])], i + 1, r, is_significant(r, alpha))
            )
    return has_within, rows


def family_size(scores: Sequence[ScoreRow]) -> int | None:
    """How many stored scores carry a q-value (the family of the rank run); None if none do."""
    n = sum(r.q_value is not None for r in scores)
    return n or None


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def write_table1_csv(path: Path, rows: Sequence[TableRow], classes: Sequence[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(TABLE_COLUMNS)
        for row in rows:
            r = row.score
            among = classes[r.class_filter] if r.class_filter >= 0 else "all"
            w.writerow(
                [row.distilled_index, row.class_name, row.rank, r.attribute, among,
                 f"{r.ap:.6f}", f"{r.lift:.6f}", f"{r.positive_rate:.6f}", r.positives,
                 "" if r.chance_ap is None else f"{r.chance_ap:.6f}", _number(r.p_value),
                 _number(r.q_value), int(row.significant)]
            )  # fmt: skip
    return path


def table1_markdown(
    rows: Sequence[TableRow],
    inputs: RankingInputs,
    *,
    has_within: bool,
    min_positives: int,
    alpha: float = ALPHA,
    family: int | None = None,
) -> str:
    if family:
        legend = (
            f"`{MARK}` q < {alpha:g}: better than chance after Benjamini-Hochberg over the "
            f"{family} scores `ddsem rank` stored for this scope (p: one-sided, from a "
            "permutation null per number of test images and positives)."
        )
    else:
        legend = (
            "No significance is stored for these scores (ranked before it existed): re-run "
            f"`ddsem rank --set {inputs.set_name} {inputs.scope_option()}`."
        )
    lines = [
        f"# What the distilled images of {inputs.set_name!r} ({inputs.method}) store",
        "",
        f"Scope {inputs.scope}; {ESTIMATOR_TEXT} of each distilled image's influence ranking of "
        f"the test images {'of its own class' if has_within else '(all classes)'}; attributes "
        f"with at least {min_positives} positives, lowest q first, then highest lift (AP / "
        "chance AP, the chance AP being the expected AP of a random ranking).",
        "",
        legend,
        "",
        "| distilled image | class | most predictive attributes (AP, lift) |",
        "|---|---|---|",
    ]
    for k in range(inputs.influence.shape[0]):
        cells = [
            f"{row.score.attribute}{MARK if row.significant else ''} "
            f"({row.score.ap:.2f}, {row.score.lift:.1f}x)"
            for row in rows
            if row.distilled_index == k
        ]
        label = inputs.classes[int(inputs.distilled_labels[k])]
        lines.append(f"| {k} | {label} | {'; '.join(cells) or '-'} |")
    return "\n".join(lines) + "\n"
