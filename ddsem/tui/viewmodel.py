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

if TYPE_CHECKING:
    from ddsem.jobs.views import Answer, RankedImage, ScoreView, SetOverview

T = TypeVar("T")
DASH = "\u2014"

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
# first paint depend on timing. Longer attribute names are cropped.
SCORE_COLUMNS = (("#", 3), ("attribute", 18), ("AP", 5), ("lift", 7), ("pos.", 4))


def score_row(rank: int, score: ScoreView) -> tuple[str, ...]:
    return (
        str(rank + 1),
        score.attribute,
        f"{score.ap:.3f}",
        f"{score.lift:.2f}x",
        str(score.positives),
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
    """A score scope -> the ``seed``/``mean_over_seeds`` arguments that load its influence."""
    if scope.startswith("seed:"):
        return {"seed": int(scope[5:]), "mean_over_seeds": False}
    return {"seed": None, "mean_over_seeds": True}


def scope_seed(scope: str | None) -> int | None:
    """The seed of a "seed:S" scope (None for "mean" or no scope)."""
    if scope and scope.startswith("seed:"):
        return int(scope[5:])
    return None


def available_scopes(score_scopes: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """Scopes a detail view can switch between: the stored score scopes and, for each complete
    run, its seed (plus "mean" when there are several runs); "mean" first, then by seed."""
    scopes = set(score_scopes) | {f"seed:{s}" for s in seeds}
    if len(seeds) > 1:
        scopes.add("mean")

    def order(scope: str) -> tuple[int, int, str]:
        seed = scope_seed(scope) if scope.startswith("seed:") else None
        return (0 if scope == "mean" else 1 if seed is not None else 2, seed or 0, scope)

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

ANSWER_COLUMNS = ("#", "image", "class", "AP", "lift")


def answer_row(rank: int, result: RankedImage) -> tuple[str, ...]:
    return (
        str(rank + 1),
        f"#{result.distilled_index}",
        result.class_name,
        f"{result.ap:.3f}",
        f"{result.lift:.2f}x",
    )


def answer_summary(answer: Answer) -> str:
    """How the question was read and what it was ranked over, in one or two lines."""
    return (
        f"{answer.parsed.describe()}\n"
        f"set {answer.set_name} ({answer.method}), {answer.scope}: {answer.positives} of "
        f"{answer.total} annotated test images are positive (random ranking AP "
        f"{answer.positive_rate:.3f}); {answer.num_distilled} distilled images ranked by AP"
    )


@dataclass(frozen=True)
class Asked:
    """A question's attribute(s), carried from an answer into the detail view of one image."""

    attribute_ids: tuple[int, ...]
    label: str  # "yellow", or "yellow & red"
    ap: float
    lift: float
    positives: int
    total: int


def asked_from(answer: Answer, result: RankedImage, attribute_ids: Sequence[int]) -> Asked:
    return Asked(
        tuple(attribute_ids),
        " & ".join(answer.parsed.attributes),
        result.ap,
        result.lift,
        answer.positives,
        answer.total,
    )


def asked_key(asked: Asked) -> str | None:
    """The attribute table's row key that already holds the question (one attribute), if any."""
    return str(asked.attribute_ids[0]) if len(asked.attribute_ids) == 1 else None


def asked_row(asked: Asked) -> tuple[str, ...]:
    return ("asked", asked.label, f"{asked.ap:.3f}", f"{asked.lift:.2f}x", str(asked.positives))


# -- help ----------------------------------------------------------------------------------------

HELP_INTRO = (
    "sets -> distilled images -> one image: the test images it influences most, the attributes "
    "its influence predicts (average precision, lift) and the highlighted attribute's "
    "precision-recall curve.\n"
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
