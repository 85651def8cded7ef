"""``ddsem attributes extract|list|add|remove|merge``: the vocabulary of semantic attributes.

Every change to the vocabulary recomputes which image has which attribute, in the same
transaction, from the answers the vocabulary was extracted from (``ddsem.jobs.attributes``).
"""

from __future__ import annotations

from typing import Any

import typer

from ddsem.cli import common
from ddsem.config import AttributeConfig

app = typer.Typer(
    help="The attribute vocabulary: extract it from the answers, list and curate it.",
    no_args_is_help=True,
)
DEFAULTS = AttributeConfig()


def _show(attrs: list[Any], title: str) -> None:
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
    from ddsem.jobs import attributes as job

    request = job.ExtractRequest(min_df, max_terms, annotator, model)
    render_extract(job.extract(common.workspace(), request))


def render_extract(r) -> None:
    """What `ddsem attributes extract` prints (the demo prints the same)."""
    common.echo(
        f"{r.candidates} candidate attributes from {r.answers} answers of {r.annotator} "
        f"({r.model}): {r.added} new, {r.kept} kept, {r.removed} removed"
    )
    _show(r.attributes, "attributes")


@app.command("list")
def list_attributes(
    kind: str = typer.Option(None, "--kind", help="Only attributes of this prompt kind."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The vocabulary: name, prompt kind, images that have it, synonyms."""
    from ddsem.jobs import attributes as job

    listing = job.list_attributes(common.workspace(create=False, quiet=as_json), kind)
    if as_json:
        common.print_json(listing.as_json())
        return
    if not listing.attributes:
        common.echo("no attributes yet: `ddsem attributes extract` (after `ddsem annotate`)")
        return
    source = listing.source
    _show(
        listing.attributes,
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
    from ddsem.jobs import attributes as job

    request = job.AddRequest(name, kind, tuple(synonym or ()))
    info = job.add(common.workspace(), request)
    common.echo(f"added {info.name!r} ({info.kind}): {info.document_frequency} images have it")


@app.command("remove")
def remove(names: list[str] = typer.Argument(..., help="Attribute names.")) -> None:
    """Remove attributes (with their labels and scores)."""
    from ddsem.jobs import attributes as job

    count = job.remove(common.workspace(), tuple(names))
    common.echo(f"removed {count} attribute(s)")


@app.command("merge")
def merge(
    target: str = typer.Argument(..., help="The attribute that stays (e.g. sky)."),
    others: list[str] = typer.Argument(..., help='Attributes folded into it (e.g. "blue sky").'),
) -> None:
    """Make synonyms: an image has TARGET when its answers mention TARGET or any of OTHERS."""
    from ddsem.jobs import attributes as job

    request = job.MergeRequest(target, tuple(others))
    info = job.merge(common.workspace(), request)
    common.echo(
        f"merged {', '.join(repr(o) for o in request.others)} into {info.name!r} "
        f"(synonyms: {', '.join(info.synonyms)}): {info.document_frequency} images have it"
    )
