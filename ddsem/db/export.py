"""Flat exports of the database for other tools: attribute scores, the influence top-k table and
annotations, as rows of plain values with names resolved (no ids to join by hand); and the checks
and the staged writing every export shares (never over the database, never over an existing file
without --force, never half-written)."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlmodel import select

from ddsem.db.engine import Database
from ddsem.db.tables import (
    Annotation,
    Attribute,
    AttributeScore,
    Dataset,
    DistilledSet,
    Image,
    ImageAttribute,
    InfluenceRun,
    InfluenceTopK,
)
from ddsem.errors import UserError

WHAT = ("scores", "influence-topk", "annotations")
FORMATS = ("csv", "parquet", "json")

SCORE_COLUMNS = [
    "set", "method", "scope", "context", "distilled_index", "attribute", "class_filter",
    "class", "estimator", "ap", "positive_rate", "positives", "lift", "chance_ap", "p_value",
    "q_value", "draws",
]  # fmt: skip
TOPK_COLUMNS = [
    "set",
    "method",
    "run_id",
    "seed",
    "context",
    "estimator",
    "distilled_index",
    "rank",
    "test_index",
    "test_label",
    "class",
    "influence",
]  # fmt: skip  (estimator: whose influence, loo exact or if / tracin / trak approximate)
ANNOTATION_COLUMNS = [
    "dataset", "split", "index", "label", "class", "prompt_name", "annotator", "model",
    "response", "attributes",
]  # fmt: skip


def _classes(s) -> dict[str, list[str]]:
    return {name: json.loads(cj) for name, cj in s.exec(select(Dataset.name, Dataset.classes_json))}


def _class_name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else ""


def scores_for_export(db: Database, set_name: str | None = None) -> list[dict[str, Any]]:
    with db.session() as s:
        classes = _classes(s)
        q = (
            select(
                AttributeScore,
                DistilledSet.name,
                DistilledSet.method,
                DistilledSet.dataset,
                Attribute.name,
            )
            .join(DistilledSet, DistilledSet.id == AttributeScore.set_id)
            .join(Attribute, Attribute.id == AttributeScore.attribute_id)
        )
        if set_name:
            q = q.where(DistilledSet.name == set_name)
        q = q.order_by(
            AttributeScore.set_id, AttributeScore.scope, AttributeScore.class_filter,
            AttributeScore.distilled_index, Attribute.name,
        )  # fmt: skip
        out = []
        for sc, name, method, dataset, attribute in s.exec(q):
            out.append(
                {
                    "set": name, "method": method, "scope": sc.scope, "context": sc.context,
                    "distilled_index": sc.distilled_index, "attribute": attribute,
                    "class_filter": sc.class_filter,
                    "class": _class_name(classes.get(dataset, []), sc.class_filter)
                    if sc.class_filter >= 0 else "all",
                    "estimator": sc.estimator, "ap": sc.ap, "positive_rate": sc.positive_rate,
                    "positives": sc.positives, "lift": sc.lift, "chance_ap": sc.chance_ap,
                    "p_value": sc.p_value, "q_value": sc.q_value, "draws": sc.draws,
                }
            )  # fmt: skip
        return out


def topk_for_export(db: Database, set_name: str | None = None) -> list[dict[str, Any]]:
    with db.session() as s:
        classes = _classes(s)
        q = (
            select(
                InfluenceTopK,
                InfluenceRun,
                DistilledSet.name,
                DistilledSet.method,
                DistilledSet.dataset,
            )
            .join(InfluenceRun, InfluenceRun.id == InfluenceTopK.run_id)
            .join(DistilledSet, DistilledSet.id == InfluenceRun.set_id)
            .where(InfluenceRun.status == "complete")
        )
        if set_name:
            q = q.where(DistilledSet.name == set_name)
        q = q.order_by(InfluenceTopK.run_id, InfluenceTopK.distilled_index, InfluenceTopK.rank)
        return [
            {
                "set": name,
                "method": method,
                "run_id": run.id,
                "seed": run.seed,
                "context": run.context,
                "estimator": run.estimator,
                "distilled_index": tk.distilled_index,
                "rank": tk.rank,
                "test_index": tk.test_index,
                "test_label": tk.test_label,
                "class": _class_name(classes.get(dataset, []), tk.test_label),
                "influence": tk.value,
            }  # fmt: skip
            for tk, run, name, method, dataset in s.exec(q)
        ]


def annotations_for_export(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        names = {a.id: a.name for a in s.exec(select(Attribute))}
        has: dict[int, list[str]] = defaultdict(list)
        for image_id, attribute_id in s.exec(
            select(ImageAttribute.image_id, ImageAttribute.attribute_id)
        ):
            has[image_id].append(names[attribute_id])
        q = (
            select(
                Annotation,
                Image.split,
                Image.index,
                Image.label,
                Dataset.name,
                Dataset.classes_json,
            )
            .join(Image, Image.id == Annotation.image_id)
            .join(Dataset, Dataset.id == Image.dataset_id)
            .order_by(Dataset.name, Image.split, Image.index, Annotation.prompt_name)
        )
        out = []
        for ann, split, index, label, dataset, classes_json in s.exec(q):
            out.append(
                {
                    "dataset": dataset, "split": split, "index": index, "label": label,
                    "class": _class_name(json.loads(classes_json), label),
                    "prompt_name": ann.prompt_name, "annotator": ann.annotator,
                    "model": ann.model, "response": ann.response,
                    "attributes": ";".join(sorted(has.get(ann.image_id, []))),
                }
            )  # fmt: skip
        return out


def check_target(out: str, fmt: str | None) -> tuple[Path, str]:
    """Validate the output file's place and format before anything is read or written (whether it
    exists, and whether it is the database, ``check_output`` decides once the database is open)."""
    path = Path(out).expanduser()
    check_place(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if not fmt:
        raise UserError(
            f"cannot tell the export format of {path.name!r}: pass --format csv, parquet or json"
        )
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}: use --format csv, parquet or json")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("parquet export needs pyarrow: pip install pyarrow") from None
    return path, fmt


def check_place(path: Path, option: str = "--out") -> None:
    """Refuse a folder, and a file whose folder does not exist."""
    if path.is_dir():
        raise UserError(f"{option} is a folder: {path}; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")


def check_output(
    path: Path, *, force: bool, protected: Sequence[Path] = (), option: str = "--out"
) -> None:
    """Refuse, with one line, to write ``path`` when it is one of ``protected`` (the database and
    its side files, ``engine.database_files``: always, even with ``force``), a folder, in a
    folder that does not exist, or an existing file (unless ``force``)."""
    resolved = path.expanduser().resolve()
    for p in protected:
        same = resolved == p
        if not same and path.exists() and p.exists():
            same = os.path.samefile(path, p)  # a hard link or another name of the same file
        if same:
            side = next((s for s in ("-wal", "-shm", "-journal") if p.name.endswith(s)), None)
            what = f"the database's {side} file" if side else "the database"
            raise UserError(f"refusing to write {option} {path}: it is {what} ({p})")
    check_place(path, option)
    if (path.exists() or path.is_symlink()) and not force:
        raise UserError(f"{option} {path} exists; pass --force to replace it")


@contextmanager
def staged(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block ends it is moved onto ``path``
    (``os.replace``: a reader sees the old file or the new one, never half of one), and on any
    error it is removed and ``path`` is left as it was. ``suffix``: the temporary file's suffix
    (a writer that picks its format from it); default ``path``'s."""
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix
        )
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; an export is an ordinary file
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_rows(rows: list[dict[str, Any]], columns: list[str], path: Path, fmt: str) -> None:
    """Write rows as CSV (header first), JSON (a list of objects) or Parquet (typed columns),
    through a temporary file beside ``path`` (``staged``), so no half-written file is left."""
    with staged(path) as tmp:
        if fmt == "csv":
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        elif fmt == "json":
            tmp.write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({c: [r[c] for r in rows] for c in columns})
            pq.write_table(table, tmp)
