"""What the screens show, as plain functions: table rows, empty-state hints, paging, grid moves
and scopes. No Textual here, so all of it is unit-tested without an app. The numbers (scores,
answers, precision-recall curves) come from the read layer, ``ddsem.jobs.views``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rich.table import Table
from rich.text import Text

from ddsem.config import SignificanceConfig
from ddsem.jobs.semantic_inputs import split_scope

if TYPE_CHECKING:
    from ddsem.jobs.views import Answer, PrCurve, RankedImage, ScoreView, SetOverview

T = TypeVar("T")
DASH = "\u2014"
ALPHA = SignificanceConfig().alpha  # the false discovery rate of "significant" in stored scores
MARKER = "*"  # a significant answer (q < alpha); the others are drawn dim
UNKNOWN = "-"  # chance, p or q of a score stored before they were computed (as the CLI writes)
Cell = str | Text

# -- commands named by empty states --------------------------------------------------------------


def set_option(name: str, method: str) -> str:
    """How a command names this set: ``--method M`` when that finds it, else ``--set NAME``."""
    return f"--method {method}" if name == method else f"--set {name}"


def no_sets_message() -> str:
    return (
        "no distilled sets yet: run `ddsem sets import FILE --method bptt` "
        "or `ddsem distill --method bptt`"
    )


def no_influence_message(name: str, method: str) -> str:
    return f"no influence run yet: run `ddsem influence {set_option(name, method)}`"


def no_scores_message(overview: SetOverview, attributes: int) -> str:
    """The next command that would produce attribute scores for this set."""
    if not overview.seeds:
        return no_influence_message(overview.name, overview.method)
    if overview.annotated_images == 0:
        return "no annotations yet: run `ddsem annotate`"
    if attributes == 0:
        return "no attribute vocabulary yet: run `ddsem attributes extract`"
    return f"no attribute scores yet: run `ddsem rank {set_option(overview.name, overview.method)}`"


# -- the sets table ------------------------------------------------------------------------------

SET_COLUMNS = (
    "name",
    "method",
    "ipc",
    "images",
    "retrained acc.",
    "influence",
    "annotated",
    "ranked",
)


def format_accuracy(accuracy: float | None) -> str:
    return DASH if accuracy is None else f"{100 * accuracy:.1f}%"


def influence_summary(overview: SetOverview) -> str:
    """ "seeds 0,1 · real 0 · 1 running" (or a dash when nothing exists)."""
    parts = []
    if overview.seeds:
        label = "seed" if len(overview.seeds) == 1 else "seeds"
        parts.append(f"{label} {','.join(map(str, overview.seeds))}")
    if overview.real_context_seeds:
        parts.append(f"real {','.join(map(str, overview.real_context_seeds))}")
    if overview.running_runs:
        parts.append(f"{overview.running_runs} running")
    return " \u00b7 ".join(parts) or DASH


def scores_summary(overview: SetOverview) -> str:
    if not overview.score_count:
        return DASH
    return f"{', '.join(overview.score_scopes)} ({overview.score_count:,})"


def set_row(overview: SetOverview) -> tuple[str, ...]:
    return (
        overview.name,
        overview.method,
        str(overview.ipc),
        str(overview.num_images),
        format_accuracy(overview.accuracy),
        influence_summary(overview),
        f"{overview.annotated_images:,} images" if overview.annotated_images else DASH,
        scores_summary(overview),
    )


# -- the attribute table -------------------------------------------------------------------------

# Fixed widths: an auto-sized DataTable header is resized on a later idle event, which made the
# first paint depend on timing. The table is drawn without cell padding (eight columns in 50
# cells), so each width holds one blank after its content (``fit``: a longer name is cut).
SCORE_COLUMNS = (
    ("#", 3), ("attribute", 13), ("AP", 6), ("chance", 7), ("p", 6), ("q", 6), (MARKER, 2),
    ("pos.", 5),
)  # fmt: skip


def is_missing(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def format_number(value: float | None) -> str:
    """A probability in at most five characters: 0.374, 2e-4 ("-" when unknown)."""
    if is_missing(value):
        return UNKNOWN
    assert value is not None
    if value >= 1e-3 or value == 0:
        return f"{value:.3f}"
    return f"{value:.0e}".replace("e-0", "e-")


def format_p(p: float | None, draws: int | None = None) -> str:
    """A permutation p-value; at the floor of its draws, 1 / (draws + 1), where no null draw
    reached the AP and only a bound is known, "<" the floor (as ``ddsem rank`` writes it)."""
    if is_missing(p):
        return UNKNOWN
    assert p is not None
    floor = 1 / (draws + 1) if draws else 0.0
    if p <= floor * (1 + 1e-9):
        return "<" + format_number(floor)
    return format_number(p)


def format_ap(ap: float | None) -> str:
    return UNKNOWN if is_missing(ap) else f"{ap:.3f}"


def styled_row(
    cells: Sequence[str], significant: bool | None, strong: Sequence[int]
) -> tuple[Cell, ...]:
    """A row drawn by its significance: the marker and the ``strong`` cells bold when
    significant, every cell dim when not, plain when unknown."""
    if significant is None:
        return tuple(Text(c, no_wrap=True) for c in cells)
    if not significant:
        return tuple(Text(c, style="dim", no_wrap=True) for c in cells)
    return tuple(
        Text(c, style="bold" if k in strong or c == MARKER else "", no_wrap=True)
        for k, c in enumerate(cells)
    )


def fit(cells: Sequence[str], columns: Sequence[tuple[str, int]]) -> list[str]:
    """Cells of a table drawn without cell padding, each cut to leave one blank in its column
    (a longer attribute name ends in an ellipsis)."""
    return [
        c if len(c) < w else c[: w - 2] + "\u2026" for c, (_, w) in zip(cells, columns, strict=True)
    ]


def marker(significant: bool | None) -> str:
    return MARKER if significant else ""


def score_row(rank: int, score: ScoreView) -> tuple[Cell, ...]:
    significant = score.significant
    cells = fit(
        (
            str(rank + 1),
            score.attribute,
            format_ap(score.ap),
            format_ap(score.chance_ap),
            format_p(score.p_value, score.draws),
            format_number(score.q_value),
            marker(significant),
            str(score.positives),
        ),
        SCORE_COLUMNS,
    )
    return styled_row(cells, significant, strong=(1, 2))


def scores_title(scope: str | None, class_filter: int, classes: Sequence[str]) -> str:
    return (
        f"by AP \u00b7 {scope or 'no influence'} \u00b7 {filter_label(class_filter, classes)}"
        f" \u00b7 {MARKER} q < {ALPHA:g}"
    )


def significance_note(q: float | None, significant: bool | None) -> str:
    """ "q 2e-4 *" for a significant AP, "q 0.710" for one that is not, "" without a q-value."""
    if significant is None or is_missing(q):
        return ""
    return f"q {format_number(q)}" + (f" {MARKER}" if significant else "")


def score_note(score: ScoreView) -> str:
    return significance_note(score.q_value, score.significant)


def asked_note(asked: Asked) -> str:
    return significance_note(asked.q_value, asked.significant)


def curve_title(curve: PrCurve, label: str, note: str) -> str:
    """Three lines above a precision-recall curve: what it is, its AP against the chance AP
    (the grey line), and how many test images are positive."""
    counts = f"{curve.positives} of {curve.total} positive"
    return (
        f"precision-recall of {label}\n"
        f"AP {curve.average_precision:.3f}, chance {format_ap(curve.chance_ap)} (grey)\n"
        + (f"{counts} \u00b7 {note}" if note else counts)
    )


def filter_label(class_filter: int, classes: Sequence[str]) -> str:
    if class_filter < 0:
        return "all classes"
    name = classes[class_filter] if class_filter < len(classes) else f"class {class_filter}"
    return f"{name} only"


def class_name(classes: Sequence[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else f"class {label}"


def format_value(value: float) -> str:
    """An influence value with its sign: positive means the distilled image helps."""
    return f"{value:+.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:+.2e}"


def cycle(options: Sequence[T], current: T) -> T:
    """The option after ``current`` (wrapping); the first one when ``current`` is not there."""
    if not options:
        return current
    if current not in options:
        return options[0]
    return options[(list(options).index(current) + 1) % len(options)]


# -- paging and grid navigation ------------------------------------------------------------------


@dataclass(frozen=True)
class Paging:
    """Page ``page`` (0-based) of ``total`` entries, ``per_page`` at a time."""

    page: int
    total: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def offset(self) -> int:
        return self.page * self.per_page

    def turn(self, step: int) -> Paging:
        """The page ``step`` pages away, clamped to the first and last page."""
        return Paging(min(max(self.page + step, 0), self.pages - 1), self.total, self.per_page)

    def with_total(self, total: int) -> Paging:
        return Paging(self.page, total, self.per_page).turn(0)

    def label(self) -> str:
        if self.total == 0:
            return "none"
        last = min(self.offset + self.per_page, self.total)
        return f"{self.offset + 1}-{last} of {self.total} \u00b7 page {self.page + 1}/{self.pages}"


MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def move_index(index: int, direction: str, count: int, columns: int) -> int:
    """Focus movement in a grid of ``count`` tiles laid out ``columns`` per row; stays put at an
    edge (left/right run along the reading order, up/down jump a row)."""
    if count <= 0:
        return 0
    dx, dy = MOVES[direction]
    target = index + dx + dy * max(1, columns)
    return target if 0 <= target < count else index


# -- scopes and class filters --------------------------------------------------------------------


def scope_arguments(scope: str) -> dict[str, object]:
    """A score scope -> the ``seed``/``mean_over_seeds``/``estimator`` arguments that load its
    influence."""
    estimator, rest = split_scope(scope)
    if rest.startswith("seed:"):
        return {"seed": int(rest[5:]), "mean_over_seeds": False, "estimator": estimator}
    return {"seed": None, "mean_over_seeds": True, "estimator": estimator}


def scope_seed(scope: str | None) -> int | None:
    """The seed of a "seed:S" (or "ESTIMATOR/seed:S") scope; None for a mean or no scope."""
    if scope:
        rest = split_scope(scope)[1]
        if rest.startswith("seed:"):
            return int(rest[5:])
    return None


def run_label(run: Any) -> str:
    """How a view names an influence run: "seed 0", or "tracin seed 0" for an estimate."""
    return f"seed {run.seed}" if run.estimator == "loo" else f"{run.estimator} seed {run.seed}"


def scope_estimator(scope: str | None) -> str:
    """Whose influence a scope ranks: "loo" (exact) or an approximation's name."""
    return split_scope(scope)[0] if scope else "loo"


def available_scopes(
    score_scopes: Sequence[str], seeds: Sequence[int], estimates: Sequence[tuple[str, int]] = ()
) -> list[str]:
    """Scopes a detail view can switch between: the stored score scopes and, for each complete
    run, its seed (plus "mean" when there are several runs); "mean" first, then by seed; then
    the same for each approximate estimator's runs (``estimates``: (estimator, seed) pairs)."""
    scopes = set(score_scopes) | {f"seed:{s}" for s in seeds}
    if len(seeds) > 1:
        scopes.add("mean")
    for name in {e for e, _ in estimates}:
        own = [s for e, s in estimates if e == name]
        scopes |= {f"{name}/seed:{s}" for s in own}
        if len(own) > 1:
            scopes.add(f"{name}/mean")

    def order(scope: str) -> tuple[int, str, int, int, str]:
        estimator, rest = split_scope(scope)
        seed = scope_seed(scope) if rest.startswith("seed:") else None
        head = (0 if estimator == "loo" else 1, estimator)
        return (*head, 0 if rest == "mean" else 1 if seed is not None else 2, seed or 0, scope)

    return sorted(scopes, key=order)


def available_filters(
    score_filters: Sequence[int], own_label: int, asked: int | None = None
) -> list[int]:
    """Class filters to cycle through: all test images, the image's own class, the asked one,
    then any other filter with stored scores."""
    out = [-1, own_label]
    if asked is not None:
        out.append(asked)
    out.extend(sorted(score_filters))
    return list(dict.fromkeys(out))


# -- query answers -------------------------------------------------------------------------------

# (label, width): one seed; several seeds show the AP's sd over seeds and whether the image is
# significant in every seed instead of the lift (AP / chance AP: the same ordering as AP).
ANSWER_COLUMNS = (
    ("#", 3), ("image", 5), ("class", 10), ("AP", 5), ("lift", 6), ("p", 5), ("q", 5),
    ("sig", 3),
)  # fmt: skip
SEEDS_ANSWER_COLUMNS = (
    ("#", 3), ("image", 5), ("class", 10), ("AP", 5), ("sd", 5), ("p", 5), ("q", 5),
    ("sig", 3), ("all", 3),
)  # fmt: skip


def several_seeds(answer: Answer) -> bool:
    return any(r.ap_sd is not None for r in answer.results)


def answer_columns(answer: Answer | None) -> tuple[tuple[str, int], ...]:
    return SEEDS_ANSWER_COLUMNS if answer is not None and several_seeds(answer) else ANSWER_COLUMNS


def answer_row(rank: int, result: RankedImage, answer: Answer) -> tuple[Cell, ...]:
    significant = result.significant
    cells = [
        str(rank + 1),
        f"#{result.distilled_index}",
        result.class_name,
        format_ap(result.ap),
    ]
    if several_seeds(answer):
        cells.append(format_ap(result.ap_sd))
    else:
        cells.append(f"{result.lift:.2f}x")
    cells += [
        format_p(result.p_value, answer.draws),
        format_number(result.q_value),
        marker(significant),
    ]
    if several_seeds(answer):
        cells.append(marker(bool(result.significant_in_every_seed)))
    return styled_row(cells, significant, strong=(1, 3))


def answer_summary(answer: Answer) -> str:
    """How the question was read and what it was ranked over, in one or two lines."""
    return (
        f"{answer.parsed.describe()}\n"
        f"set {answer.set_name} ({answer.method}), {answer.scope}: {answer.positives} of "
        f"{answer.total} annotated test images positive, chance AP "
        f"{format_ap(answer.chance_ap)}; {answer.num_distilled} distilled images ranked by AP"
    )


def verdict(answer: Answer) -> Text:
    """The answer in plain words (the query job's verdict), its claim in bold on the first line
    and the best image's numbers on the second."""
    claim, _, best = answer.verdict.partition("; best: ")
    text = Text()
    text.append(claim, style="bold")
    if best:
        text.append(f"\nbest: {best}")
    return text


@dataclass(frozen=True)
class Asked:
    """A question's attribute(s), carried from an answer into the detail view of one image."""

    attribute_ids: tuple[int, ...]
    label: str  # "yellow", or "yellow & red"
    ap: float
    positives: int
    total: int
    chance_ap: float | None = None
    p_value: float | None = None
    q_value: float | None = None  # over the distilled images ranked for the question
    draws: int | None = None
    significant: bool | None = None  # q < the question's alpha
    scope: str | None = None  # where these numbers hold: the answer's scope and class filter
    class_filter: int = -1


def asked_from(answer: Answer, result: RankedImage, attribute_ids: Sequence[int]) -> Asked:
    return Asked(
        tuple(attribute_ids),
        " & ".join(answer.parsed.attributes),
        result.ap,
        answer.positives,
        answer.total,
        chance_ap=result.chance_ap,
        p_value=result.p_value,
        q_value=result.q_value,
        draws=answer.draws,
        significant=result.significant,
        scope=answer.scope,
        class_filter=-1 if answer.parsed.class_index is None else answer.parsed.class_index,
    )


def asked_here(asked: Asked | None, scope: str | None, class_filter: int | None) -> bool:
    """Whether the question's numbers belong in this view: its own scope and class filter
    (in another, the AP, p and q would be those of a ranking not shown)."""
    return asked is not None and (asked.scope, asked.class_filter) == (scope, class_filter)


def asked_key(asked: Asked) -> str | None:
    """The attribute table's row key that already holds the question (one attribute), if any."""
    return str(asked.attribute_ids[0]) if len(asked.attribute_ids) == 1 else None


def asked_row(asked: Asked) -> tuple[Cell, ...]:
    significant = asked.significant
    cells = fit(
        (
            "Q",
            asked.label,
            format_ap(asked.ap),
            format_ap(asked.chance_ap),
            format_p(asked.p_value, asked.draws),
            format_number(asked.q_value),
            marker(significant),
            str(asked.positives),
        ),
        SCORE_COLUMNS,
    )
    return styled_row(cells, significant, strong=(1, 2))


# -- help ----------------------------------------------------------------------------------------

HELP_INTRO = (
    "sets -> distilled images -> one image: the test images it influences most, the attributes "
    "its influence predicts (average precision beside the chance AP of a random ranking, "
    "permutation p and Benjamini-Hochberg q) and the highlighted attribute's precision-recall "
    f"curve. {MARKER} marks an answer better than chance (q < {ALPHA:g}); the others are dim. "
    "A question's answer says whether any distilled image beats chance; in one image's "
    "attributes, Q is the row of the question asked.\n"
)
SETS_KEYS = [("enter", "open the highlighted set"), ("up/down", "move")]
GRID_KEYS = [("arrows", "move between images"), ("enter", "open the image")]
DETAIL_KEYS = [
    ("tab", "move between the attribute table and the test images"),
    ("up/down", "choose the attribute whose precision-recall curve is drawn"),
]
QUERY_KEYS = [
    ("enter", "ask; in the answers, open the highlighted image"),
    ("tab", "move between the question, the set and the answers"),
]


def binding_pairs(bindings: Sequence[Any]) -> list[tuple[str, str]]:
    """(key as shown, description) of Textual bindings or (key, action, description) tuples."""
    pairs = []
    for b in bindings:
        if isinstance(b, tuple):
            pairs.append((b[0], b[2] if len(b) > 2 else b[1]))
        else:
            pairs.append((b.key_display or b.key, b.tooltip or b.description))
    return pairs


def help_table(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> Table:
    """Keys of some screens: a bold title per screen, then key and what it does (wrapped)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for n, (title, pairs) in enumerate(sections):
        if n:
            table.add_row("", "")
        table.add_row(Text(title, style="bold"), "")
        for key, description in pairs:
            table.add_row(key, description)
    return table
