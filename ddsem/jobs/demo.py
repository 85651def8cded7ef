"""The demo: the whole product on real CIFAR-10 on a CPU, in minutes, composed of jobs.

Each step is a job request together with the ``ddsem ...`` command that runs the same request,
so a face can print the command before it runs the step. The demo only chooses small settings.
A re-run on the same database reuses what is done (the set, the influence run, the annotations)
and finishes in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsem.errors import UserError
from ddsem.jobs import annotate, attributes, distill, influence, query, rank, report
from ddsem.jobs.common import DataSource, check
from ddsem.jobs.workspace import Workspace


@dataclass(frozen=True)
class DemoSettings:
    """Small settings that keep the demo under 5 minutes on 2 CPU cores."""

    set_name: str = "demo-dm"
    ipc: int = 2  # 20 distilled images
    iterations: int = 200  # DM iterations (the paper's protocol: 20,000)
    width: int = 32  # ConvNet width for distilling and for the influence models (paper: 128)
    batch_real: int = 32  # DM real images per class per step (paper: 256); 64 gained nothing
    steps: int = 300  # the paper's 300 full-batch SGD steps for every LOO model
    # Every test image, as in the paper: training costs the same whatever the number of test
    # images, and with 500 of them no answer was better than chance (issue 14's scan).
    test_limit: int | None = None
    questions: tuple[str, ...] = ("yellow cars", "blue sky planes", "green grass frogs")


SHRUNKEN = DemoSettings(
    set_name="demo-dm-small", iterations=20, width=8, batch_real=16, steps=30, test_limit=100
)


@dataclass(frozen=True)
class DemoRequest:
    data: DataSource = None  # a path or an ImageData; None: $DDSEM_DATA, then the usual places
    out: str = "ddsem-demo"
    small: bool = False
    data_in_commands: bool = True  # print --data in the commands (False: it is in $DDSEM_DATA)

    def __post_init__(self) -> None:
        check(bool(self.out), "--out is empty")

    @property
    def settings(self) -> DemoSettings:
        return SHRUNKEN if self.small else DemoSettings()


@dataclass(frozen=True)
class DemoStep:
    """One step: ``kind`` names the job (distill, influence, annotate, attributes, rank, query,
    report), ``command`` the equivalent command line, ``reused`` a step with nothing to do
    that is not run at all (the set exists)."""

    number: int
    title: str
    kind: str
    request: Any
    command: tuple[str, ...]
    reused: bool = False


TOTAL_STEPS = 7


def plan(ws: Workspace, req: DemoRequest) -> list[DemoStep]:
    """The steps in order (reads only: whether the set is already stored)."""
    from ddsem.db.sets import list_sets

    s = req.settings
    data = ("--data", str(req.data)) if _printable(req) else ()
    steps = [
        DemoStep(
            1,
            f"distil CIFAR-10 with distribution matching ({s.ipc} images per class)",
            "distill",
            distill.DistillRequest(
                "dm", ipc=s.ipc, iterations=s.iterations, width=s.width,
                batch_real=s.batch_real, name=s.set_name, data=req.data,
            ),
            ("distill", "--method", "dm", "--ipc", str(s.ipc), "--iterations", str(s.iterations),
             "--width", str(s.width), "--batch-real", str(s.batch_real), "--name", s.set_name,
             *data),
            reused=any(x.name == s.set_name for x in list_sets(ws.db)),
        ),
        DemoStep(
            2,
            "exact leave-one-out influence of every distilled image on real test images",
            "influence",
            influence.InfluenceRequest(
                set_name=s.set_name, width=s.width, steps=s.steps, test_limit=s.test_limit,
                data=req.data,
            ),
            ("influence", "--set", s.set_name, "--width", str(s.width), "--steps", str(s.steps),
             *_limit("--test-limit", s.test_limit), *data),
        ),
        DemoStep(
            3,
            "annotate those test images with the offline colour annotator",
            "annotate",
            annotate.AnnotateRequest(annotator="color", limit=s.test_limit, data=req.data),
            ("annotate", "--annotator", "color", *_limit("--limit", s.test_limit), *data),
        ),
        DemoStep(
            4,
            "extract the attribute vocabulary from the answers",
            "attributes",
            attributes.ExtractRequest(),
            ("attributes", "extract"),
        ),
        DemoStep(
            5,
            "rank: average precision of every distilled image x attribute",
            "rank",
            rank.RankRequest(set_name=s.set_name),
            ("rank", "--set", s.set_name),
        ),
    ]  # fmt: skip
    for q in s.questions:
        steps.append(
            DemoStep(
                6,
                f"ask: {q!r}",
                "query",
                query.QueryRequest(q, set_name=s.set_name, top=3, images=3),
                ("query", q, "--set", s.set_name, "--top", "3", "--images", "3"),
            )
        )
    steps.append(report_step(req, list(s.questions)))
    return steps


def report_step(req: DemoRequest, answered: list[str]) -> DemoStep:
    """The report step for the first question that had an answer (none: the report's own
    choice, the highest-lift pair)."""
    s = req.settings
    question = answered[0] if answered else None
    ask = ("--query", question) if question else ()
    return DemoStep(
        7,
        "figures: PR curves, most influenced test images, Table 1",
        "report",
        report.ReportRequest(req.out, set_name=s.set_name, question=question),
        ("report", "--set", s.set_name, "--out", req.out, *ask),
    )


JOBS = {
    "distill": distill.run,
    "influence": influence.run,
    "annotate": annotate.run,
    "attributes": attributes.extract,
    "rank": rank.run,
    "query": query.run,
    "report": report.run,
}


def run_step(ws: Workspace, step: DemoStep) -> Any:
    """Run one step's job; its result is what the step's command would have rendered.
    A question the annotations cannot answer (no test image has the attribute) is not a
    failure of the demo: its refusal comes back as a ``NoAnswer``."""
    if step.kind != "query":
        return JOBS[step.kind](ws, step.request)
    try:
        return JOBS[step.kind](ws, step.request)
    except UserError as refused:
        return NoAnswer(str(refused))


@dataclass(frozen=True)
class NoAnswer:
    reason: str


def run(
    ws: Workspace,
    req: DemoRequest,
    on_step: Callable[[DemoStep], None] | None = None,
    on_result: Callable[[DemoStep, Any], None] | None = None,
    db: str | None = None,
) -> DemoResult:
    """Every step in order. ``on_step(step)`` is called before a step runs (or is reused) and
    ``on_result(step, result)`` after it, so a face can print the command and render the result
    as that command would; the report is drawn for the first question that had an answer."""
    started = time.perf_counter()
    answered: list[str] = []
    ranking = None
    for step in plan(ws, req):
        if step.kind == "report":
            step = report_step(req, answered)
        if on_step is not None:
            on_step(step)
        if step.reused:
            continue
        result = run_step(ws, step)
        if step.kind == "query" and not isinstance(result, NoAnswer):
            answered.append(step.request.text)
        if step.kind == "rank":
            ranking = result
        if on_result is not None:
            on_result(step, result)
    return summary(req, time.perf_counter() - started, db, ranking)


@dataclass
class DemoResult:
    seconds: float
    out: str
    figures: list[str] = field(default_factory=list)  # PNG, MD and CSV files under out
    highlights: list[str] = field(default_factory=list)  # the top-level ones, then two more
    next_commands: list[tuple[str, str]] = field(default_factory=list)  # (command, comment)
    # What the ranking found: answers at q < alpha of all it stored, and the strongest ones
    # (None when the rank step did not run in this call)
    significant: int | None = None
    family: int | None = None
    alpha: float | None = None
    strongest: list[Any] = field(default_factory=list)  # jobs.rank.TopScore, largest lift first

    def finding(self) -> str | None:
        """The demo's closing claim, in plain words (None: nothing was ranked in this run)."""
        if self.family is None:
            return None
        if not self.significant:
            return (
                f"no (distilled image, attribute, class) answer is better than chance at "
                f"q < {self.alpha:g} (0 of {self.family} scores, Benjamini-Hochberg)"
            )
        return (
            f"{self.significant} of {self.family} (distilled image, attribute, class) answers are "
            f"better than chance at q < {self.alpha:g} (Benjamini-Hochberg); among the ten with the "
            "lowest q, the largest lifts:"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "out": self.out,
            "figures": self.figures,
            "next": [c for c, _ in self.next_commands],
            "significant": self.significant,
            "family": self.family,
        }


def summary(
    req: DemoRequest, seconds: float, db: str | None = None, ranking: Any = None
) -> DemoResult:
    """What the demo made, and the next commands, each runnable exactly as printed."""
    out_dir = Path(req.out).expanduser()
    figures = sorted(p for p in out_dir.rglob("*") if p.suffix in (".png", ".md", ".csv"))
    top = [p for p in figures if p.parent == out_dir]
    deeper = [p for p in figures if p.parent != out_dir][:2]
    s = req.settings
    g = f" --db {_quote(db)}" if db else ""
    data = f" --data {_quote(str(req.data))}" if _printable(req) else ""
    found: dict[str, Any] = {}
    if ranking is not None:
        found = {
            "significant": ranking.significant,
            "family": ranking.family,
            "alpha": ranking.alpha,
            # among the significant, the largest lift: AP far above what chance gives
            "strongest": sorted(
                (t for t in ranking.top if t.significant), key=lambda t: (-t.lift, t.q_value)
            )[:5],
        }
    return DemoResult(
        **found,
        seconds=seconds,
        out=str(out_dir),
        figures=[str(p) for p in figures],
        highlights=[str(p) for p in top + deeper],
        next_commands=[
            (f"ddsem{g} tui", "explore sets, images, influence and questions"),
            (f'ddsem{g} query "red trucks" --set {s.set_name}', ""),
            (f"ddsem{g} influence show --set {s.set_name} --image 0", ""),
            (f"ddsem{g} influence check --set {s.set_name} --out {_quote(req.out)}{data}", ""),
        ],
    )


def _limit(option: str, value: int | None) -> tuple[str, ...]:
    return (option, str(value)) if value is not None else ()


def _printable(req: DemoRequest) -> bool:
    """Whether the commands name the data (a path the user gave, not $DDSEM_DATA)."""
    return isinstance(req.data, str | Path) and req.data_in_commands


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg
