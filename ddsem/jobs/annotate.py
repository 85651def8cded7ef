"""Job ``annotate``: answers of an annotator (LLaVA or the colour palette) about real images.

Resumable and idempotent: each (image, prompt, annotator, model) is answered once; every batch
is committed on its own, so an interruption keeps finished batches and a re-run does only the
rest. ``plan`` finds what is missing and refuses a prompt whose name was answered with another
text, before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddsem.config import AnnotateConfig
from ddsem.errors import UserError
from ddsem.jobs.common import DataSource, check, load_data

if TYPE_CHECKING:
    import numpy as np

    from ddsem.annotate.prompts import Prompt
    from ddsem.data import ImageData
    from ddsem.jobs.workspace import Workspace

ANNOTATORS = ("color", "llava")
DEFAULTS = AnnotateConfig()

__all__ = [
    "ANNOTATORS",
    "AnnotatePlan",
    "AnnotateRequest",
    "AnnotateResult",
    "parse_classes",
    "plan",
    "run",
]


def parse_classes(wanted: str | Sequence[str | int], classes: Sequence[str]) -> list[int]:
    """ "automobile,frog", "1,6" or ("automobile", 6) -> class indices; one clear line for
    anything unknown."""
    items = wanted.split(",") if isinstance(wanted, str) else wanted
    names = [str(t).strip() for t in items if str(t).strip()]
    if not names:
        raise UserError("--classes is empty: name classes, e.g. --classes automobile,frog")
    classes = list(classes)
    out: list[int] = []
    for item in names:
        if item.isdigit() and int(item) < len(classes):
            index = int(item)
        elif item.lower() in classes:
            index = classes.index(item.lower())
        else:
            raise UserError(
                f"unknown class {item!r}: classes are {', '.join(classes)} (or 0-{len(classes) - 1})"
            )
        if index not in out:
            out.append(index)
    return out


def _prompt_pairs(prompts: Sequence[str | tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Raw ``NAME=TEXT`` options or (name, text) pairs -> checked (name, text) pairs."""
    from ddsem.annotate.prompts import parse_prompts

    raw = [p if isinstance(p, str) else f"{p[0]}={p[1]}" for p in prompts]
    return tuple((p.name, p.text) for p in parse_prompts(raw, {}))


@dataclass(frozen=True)
class AnnotateRequest:
    annotator: str = DEFAULTS.annotator  # color | llava
    model: str | None = None  # llava: a hub name or a local folder [default: DEFAULTS.model]
    # llava: (name, text) pairs or raw "NAME=TEXT" options; empty: the paper's two prompts
    prompts: tuple[tuple[str, str], ...] | tuple[str, ...] = ()
    split: str = DEFAULTS.split
    limit: int | None = None  # a class-stratified subset of the split (seed 0)
    classes: tuple[str, ...] | str | None = None  # names or indices, taken from the subset
    batch_size: int | None = None  # None: DEFAULTS.llava_batch_size or color_batch_size
    max_new_tokens: int = DEFAULTS.max_new_tokens
    data: DataSource = None
    dataset: str = "cifar10"

    def __post_init__(self) -> None:
        from ddsem.data.cifar import SPLITS

        annotator = self.annotator.strip().lower()
        object.__setattr__(self, "annotator", annotator)
        check(
            annotator in ANNOTATORS,
            f"unknown annotator {annotator!r}: use {' or '.join(ANNOTATORS)}",
        )
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be a positive number of images, got {self.limit}")
        if annotator == "color":
            from ddsem.annotate.color import PALETTE_VERSION

            if self.prompts:
                raise UserError(
                    "--prompt is for --annotator llava; the colour annotator answers object "
                    "and background"
                )
            if self.model:
                raise UserError(
                    f"--model is for --annotator llava; the colour annotator is {PALETTE_VERSION}"
                )
        object.__setattr__(self, "prompts", _prompt_pairs(self.prompts or ()))
        check(
            self.dataset in ("cifar10", "cifar100"),
            f"unknown dataset {self.dataset!r}: use cifar10 or cifar100",
        )
        check(
            self.split in SPLITS,
            f"unknown split {self.split!r}: use one of {', '.join(SPLITS)}",
        )
        if self.classes is not None:
            items = self.classes.split(",") if isinstance(self.classes, str) else self.classes
            wanted = tuple(str(c).strip() for c in items if str(c).strip())
            check(bool(wanted), "--classes is empty: name classes, e.g. --classes automobile,frog")
            object.__setattr__(self, "classes", wanted)

    @property
    def batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return DEFAULTS.color_batch_size if self.annotator == "color" else DEFAULTS.llava_batch_size


@dataclass
class AnnotatePlan:
    """What the request asks and what is still missing; nothing written yet."""

    annotator: str
    model_id: str  # what Annotation.model records (the palette version, a folder or hub name)
    prompts: list[Prompt]
    split: str
    indices: np.ndarray  # the selected images of the split
    todo: list[tuple[Prompt, int]]  # (prompt, split index) not answered yet, in answer order
    data: ImageData = field(repr=False)

    @property
    def already_stored(self) -> int:
        return len(self.indices) * len(self.prompts) - len(self.todo)


def plan(ws: Workspace, request: AnnotateRequest) -> AnnotatePlan:
    """The prompts, the model id, the selected images and the answers still to give; refuses a
    prompt name already answered with another text. Reads only."""
    import numpy as np

    from ddsem.annotate.prompts import DEFAULT_PROMPTS, Prompt
    from ddsem.data import stratified_indices
    from ddsem.db import annotations as store

    annotator = request.annotator
    if annotator == "color":
        from ddsem.annotate.color import COLOR_PROMPTS, PALETTE_VERSION

        prompts = [Prompt(n, t) for n, t in COLOR_PROMPTS.items()]
        model_id = PALETTE_VERSION
    else:
        from ddsem.annotate.llava import model_key

        pairs = request.prompts or tuple(DEFAULT_PROMPTS.items())
        prompts = [Prompt(n, t) for n, t in pairs]
        model_id = model_key(request.model or DEFAULTS.model)

    data = load_data(request.data, request.dataset)
    _, labels = data.split(request.split)
    indices = stratified_indices(labels, request.limit, seed=0)
    if request.classes is not None:
        keep = parse_classes(request.classes, data.classes)
        indices = indices[np.isin(labels[indices], keep)]
    if len(indices) == 0:
        classes = None if request.classes is None else ",".join(request.classes)
        raise UserError(
            f"no images selected ({request.split} split, --limit {request.limit}, "
            f"--classes {classes}): widen the selection"
        )

    stored = store.stored_prompts(ws.db, annotator, model_id)
    for p in prompts:
        if p.name in stored and stored[p.name] != p.text:
            raise UserError(
                f"prompt {p.name!r} was answered by {annotator} {model_id} with another text "
                f"({stored[p.name]!r}); give the new question another NAME"
            )
    known = store.image_ids(ws.db, data.name, request.split)
    done = store.answered(
        ws.db, [known[i] for i in map(int, indices) if i in known], annotator, model_id
    )
    todo = [
        (p, int(i))
        for p in prompts
        for i in indices
        if int(i) not in known or (known[int(i)], p.name) not in done
    ]
    return AnnotatePlan(annotator, model_id, prompts, request.split, indices, todo, data)


@dataclass
class AnnotateResult:
    annotator: str
    model: str
    split: str
    images: int  # selected images
    prompts: list[str]
    batch: int
    todo: int  # answers that were missing when the run started
    already_stored: int
    written: int = 0
    seconds: float = 0.0
    samples: list[tuple[int, str, str]] = field(default_factory=list)  # (index, prompt, answer)
    relabelled: int | None = None  # image-attribute labels recomputed (None: no vocabulary)

    @property
    def nothing_to_do(self) -> bool:
        return self.todo == 0

    @property
    def images_per_second(self) -> float:
        return self.todo / max(len(self.prompts), 1) / max(self.seconds, 1e-9)

    @property
    def answers_per_second(self) -> float:
        return self.todo / max(self.seconds, 1e-9)

    def as_json(self) -> dict[str, Any]:
        return {
            "annotator": self.annotator,
            "model": self.model,
            "split": self.split,
            "images": self.images,
            "prompts": self.prompts,
            "batch": self.batch,
            "todo": self.todo,
            "already_stored": self.already_stored,
            "written": self.written,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "answers_per_second": round(self.answers_per_second, 3),
            "samples": [
                {"index": i, "prompt": name, "answer": answer} for i, name, answer in self.samples
            ],
            "relabelled": self.relabelled,
        }


def _engine(ws: Workspace, request: AnnotateRequest) -> Any:
    if request.annotator == "color":
        from ddsem.annotate.color import ColorAnnotator

        return ColorAnnotator()
    from ddsem.annotate.llava import load_llava

    return load_llava(
        request.model or DEFAULTS.model, ws.torch_device(), max_new_tokens=request.max_new_tokens
    )


def _batches(p: AnnotatePlan, batch: int):
    """(claim key, missing (prompt, index) pairs) of each batch of the whole selection that
    still has something missing, in answer order."""
    todo = {(q.name, i) for q, i in p.todo}
    everything = [(q, int(i)) for q in p.prompts for i in p.indices]
    for first in range(0, len(everything), batch):
        chunk = [(q, i) for q, i in everything[first : first + batch] if (q.name, i) in todo]
        if chunk:
            key = f"annotate:{p.annotator}:{p.model_id}:{p.split}:{batch}:{first}:{len(everything)}"
            yield key, chunk


WAIT_SECONDS = 1.0  # how often a process whose remaining batches others hold looks again


def _unanswered(ws: Workspace, p: AnnotatePlan, ids: dict, batches: list) -> list:
    """The batches of ``batches`` that still have an answer missing (missing ones only)."""
    from ddsem.db import annotations as store

    out = []
    for key, chunk in batches:
        done = store.answered(ws.db, [ids[i] for _, i in chunk], p.annotator, p.model_id)
        rest = [(q, i) for q, i in chunk if (ids[i], q.name) not in done]
        if rest:
            out.append((key, rest))
    return out


def run(ws: Workspace, request: AnnotateRequest) -> AnnotateResult:
    """Answer what is missing, batch by batch (each batch committed on its own), then relabel
    the attribute vocabulary if there is one. The engine is loaded only when there is work."""
    from ddsem.db import annotations as store
    from ddsem.db import claims
    from ddsem.db.sets import ensure_dataset, ensure_images
    from ddsem.runtime import process_state

    p = plan(ws, request)
    shard = process_state()
    shard.wait()  # several processes: every one has planned before any answer is written
    result = AnnotateResult(
        p.annotator,
        p.model_id,
        p.split,
        len(p.indices),
        [q.name for q in p.prompts],
        request.batch,
        len(p.todo),
        p.already_stored,
    )
    if not p.todo:
        return result
    ws.db.require_writable()  # before the engine loads and answers, not at the first batch
    engine = _engine(ws, request)  # a model that cannot be loaded fails before any write

    data, batch = p.data, request.batch
    pixels, labels = data.split(p.split)
    row = ensure_dataset(
        ws.db, data.name, data.source, data.classes, len(data.train_y), len(data.test_y)
    )
    ensure_images(ws.db, row.id, p.split, p.indices, pixels, labels)
    ids = store.image_ids(ws.db, data.name, p.split)

    ws.progress.note(
        f"{p.annotator} ({p.model_id}): {len(p.todo)} answers to give for {len(p.indices)} "
        f"{p.split} images ({p.already_stored} already stored), batch {batch}"
    )
    start = time.perf_counter()
    owner = claims.new_owner()
    left_to_others = 0
    # several processes (accelerate launch, --processes): each answers its contiguous share of
    # the batches first, then takes over (claims) what the others leave, and waits for the rest
    batches = shard.mine_first(list(_batches(p, batch)))
    with ws.progress.phase(f"{p.annotator} answers", len(p.todo)) as advance:
        while batches:
            held = []
            for key, chunk in batches:
                # a batch is claimed before it is answered: the same job started twice splits
                # the batches (they are cut from the whole selection, so both cut them alike)
                if not claims.claim(ws.db, key, owner):
                    held.append((key, chunk))
                    continue
                # answers another process stored (then released the batch) since the plan
                done = store.answered(ws.db, [ids[i] for _, i in chunk], p.annotator, p.model_id)
                chunk = [(q, i) for q, i in chunk if (ids[i], q.name) not in done]
                if not chunk:
                    claims.release(ws.db, key, owner)
                    continue
                try:
                    answers = engine.answer(pixels[[i for _, i in chunk]], [q for q, _ in chunk])
                    rows = [
                        (ids[i], q.name, q.text, a)
                        for (q, i), a in zip(chunk, answers, strict=True)
                    ]
                    result.written += store.add_annotations(ws.db, p.annotator, p.model_id, rows)
                finally:
                    claims.release(ws.db, key, owner)
                advance(len(chunk))
            if not shard.distributed:  # one process: what another holds is left to it
                left_to_others = sum(len(c) for _, c in held)
                break
            batches = _unanswered(ws, p, ids, held)
            if batches:
                time.sleep(WAIT_SECONDS)  # another process is answering them
    result.seconds = time.perf_counter() - start
    if shard.distributed and not shard.is_main:
        return result  # the main process relabels, once every batch is answered
    if left_to_others:
        ws.progress.note(
            f"{left_to_others} answers were being given by another process at the same time; "
            "a re-run adds any it did not finish"
        )

    i = p.todo[0][1]
    result.samples = [
        (i, r.prompt_name, r.response)
        for r in store.read_annotations(ws.db, p.annotator, p.model_id, image_ids=[ids[i]])
    ]
    if store.list_attributes(ws.db):
        from ddsem.annotate.attributes import label_pairs

        result.relabelled = store.relabel(ws.db, label_pairs)
    return result
