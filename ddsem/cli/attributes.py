"""``ddsem attributes extract|list|add|remove|merge``: the vocabulary of semantic attributes.

Every change to the vocabulary recomputes which image has which attribute, in the same
transaction, from the answers the vocabulary was extracted from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ddsem.cli import common
from ddsem.config import AttributeConfig
from ddsem.errors import UserError

if TYPE_CHECKING:
    from ddsem.db import Database
    from ddsem.db.annotations import AnnotationSource, AttributeInfo

app = typer.Typer(
    help="The attribute vocabulary: extract it from the answers, list and curate it.",
    no_args_is_help=True,
)
DEFAULTS = AttributeConfig()


def _choose_source(db: Database, annotator: str | None, model: str | None) -> AnnotationSource:
    from ddsem.db.annotations import annotation_sources

    sources = annotation_sources(db)
    if not sources:
        raise UserError("no annotations yet: run `ddsem annotate` first")
    chosen = [
        s
        for s in sources
        if (annotator is None or s.annotator == annotator) and (model is None or s.model == model)
    ]
    listing = "; ".join(f"--annotator {s.annotator} --model {s.model}" for s in sources)
    if not chosen:
        raise UserError(f"no annotations from that annotator/model; stored: {listing}")
    if len(chosen) > 1:
        raise UserError(
            f"answers come from {len(chosen)} annotators or models: choose one ({listing})"
        )
    return chosen[0]


def _kinds(db: Database) -> list[str]:
    from ddsem.db.annotations import annotation_sources

    kinds = {"object", "background"}
    for s in annotation_sources(db):
        kinds.update(s.prompts)
    return sorted(kinds)


def _show(attrs: list[AttributeInfo], title: str) -> None:
    common.table(
        title,
        ["name", "kind", "images", "synonyms", "source"],
        [[a.name, a.kind, a.document_frequency, ", ".join(a.synonyms), a.source] for a in attrs],
    )


@app.command("extract")
def extract(
    min_df: int = typer.Option(
        DEFAULTS.min_df, "--min-df", help="Keep terms found in at least this many answers."
    ),
    max_terms: int = typer.Option(
        DEFAULTS.max_terms, "--max-terms", help="Keep at most this many terms per prompt."
    ),
    annotator: str = typer.Option(None, "--annotator", help="Use this annotator's answers."),
    model: str = typer.Option(None, "--model", help="Use this model's answers."),
) -> None:
    """Candidate attributes: recurring words and word pairs of the answers, per prompt.

    Replaces the extracted part of the vocabulary; attributes you added or merged are kept.
    """
    from ddsem.annotate.attributes import extract_candidates, label_pairs
    from ddsem.db import annotations as store

    if min_df < 1:
        raise UserError(f"--min-df must be at least 1, got {min_df}")
    if max_terms < 1:
        raise UserError(f"--max-terms must be at least 1, got {max_terms}")
    db = common.open_database()
    source = _choose_source(db, annotator, model)
    responses: dict[str, list[str]] = {}
    for row in store.read_annotations(db, source.annotator, source.model):
        responses.setdefault(row.prompt_name, []).append(row.response)
    config = AttributeConfig(min_df=min_df, max_terms=max_terms, ngram_max=DEFAULTS.ngram_max)
    candidates = extract_candidates(responses, config)
    if not candidates:
        raise UserError(
            f"no word occurs in {min_df} answers of {source.annotator} ({source.model}); "
            "lower --min-df"
        )
    added, kept, removed = store.replace_extracted(
        db,
        [(c.name, c.kind, c.synonyms) for c in candidates],
        (source.annotator, source.model),
        label_pairs,
    )
    common.echo(
        f"{len(candidates)} candidate attributes from {sum(map(len, responses.values()))} answers "
        f"of {source.annotator} ({source.model}): {added} new, {kept} kept, {removed} removed"
    )
    _show(store.list_attributes(db), "attributes")


@app.command("list")
def list_attributes(
    kind: str = typer.Option(None, "--kind", help="Only attributes of this prompt kind."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The vocabulary: name, prompt kind, images that have it, synonyms."""
    from ddsem.db.annotations import attribute_source
    from ddsem.db.annotations import list_attributes as _list

    db = common.open_database()
    attrs = [a for a in _list(db) if kind is None or a.kind == kind]
    if as_json:
        common.print_json(
            [
                {
                    "id": a.id,
                    "name": a.name,
                    "kind": a.kind,
                    "synonyms": a.synonyms,
                    "source": a.source,
                    "images": a.document_frequency,
                }
                for a in attrs
            ]
        )
        return
    if not attrs:
        common.echo("no attributes yet: `ddsem attributes extract` (after `ddsem annotate`)")
        return
    source = attribute_source(db)
    _show(
        attrs,
        f"attributes (matched in {source[0]} {source[1]} answers)" if source else "attributes",
    )


@app.command("add")
def add(
    name: str = typer.Argument(..., help='The attribute, a word or phrase ("parking lot").'),
    kind: str = typer.Option(
        "any", "--kind", help="Which prompt's answers to match: object, background, ... or any."
    ),
    synonym: list[str] = typer.Option(
        None, "--synonym", help="Another word or phrase meaning the same; repeatable."
    ),
) -> None:
    """Add an attribute by hand; images are labelled from the stored answers at once."""
    from ddsem.annotate.attributes import label_pairs, phrase
    from ddsem.db.annotations import add_attribute

    name = name.strip()
    synonyms = [s.strip() for s in synonym or [] if s.strip()]
    for term in [name, *synonyms]:
        if not phrase(term):
            raise UserError(
                f"{term!r} has no word that matching can see (common words such as 'the', "
                "'object' or 'background' are ignored)"
            )
    db = common.open_database()
    kinds = _kinds(db)
    if kind != "any" and kind not in kinds:
        raise UserError(f"unknown kind {kind!r}: use any or a prompt name ({', '.join(kinds)})")
    info = add_attribute(db, name, kind, synonyms, label_pairs)
    common.echo(f"added {info.name!r} ({info.kind}): {info.document_frequency} images have it")


@app.command("remove")
def remove(names: list[str] = typer.Argument(..., help="Attribute names.")) -> None:
    """Remove attributes (with their labels and scores)."""
    from ddsem.annotate.attributes import label_pairs
    from ddsem.db.annotations import remove_attributes

    count = remove_attributes(common.open_database(), list(dict.fromkeys(names)), label_pairs)
    common.echo(f"removed {count} attribute(s)")


@app.command("merge")
def merge(
    target: str = typer.Argument(..., help="The attribute that stays (e.g. sky)."),
    others: list[str] = typer.Argument(..., help='Attributes folded into it (e.g. "blue sky").'),
) -> None:
    """Make synonyms: an image has TARGET when its answers mention TARGET or any of OTHERS."""
    from ddsem.annotate.attributes import label_pairs
    from ddsem.db.annotations import merge_attributes

    others = [o for o in dict.fromkeys(others) if o != target]
    if not others:
        raise UserError("merge needs at least one other attribute than the target")
    info = merge_attributes(common.open_database(), target, others, label_pairs)
    common.echo(
        f"merged {', '.join(repr(o) for o in others)} into {info.name!r} "
        f"(synonyms: {', '.join(info.synonyms)}): {info.document_frequency} images have it"
    )
