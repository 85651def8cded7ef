"""``ddsem rank``, ``ddsem query "yellow cars"`` and ``ddsem report``: which semantics the
distilled images store, measured by the PR-AUC of their influence rankings (paper 5.2)."""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ddsem.cli import common
from ddsem.errors import UserError

if TYPE_CHECKING:
    pass

METHOD_HELP = "The newest distilled set of this method (bptt, dm, gm, tm, ...)."
SET_HELP = "The distilled set by name (instead of --method)."
SEED_HELP = "Use the influence run of this seed (scope seed:S)."
MEAN_HELP = "Average the complete runs' influence over seeds (scope mean)."


def register(app: typer.Typer) -> None:
    """Mount the three top-level commands on the root app."""
    app.command("rank")(rank)
    app.command("query")(query)
    app.command("report")(report)


def rank(
    method: str = typer.Option(None, "--method", help=METHOD_HELP),
    set_name: str = typer.Option(None, "--set", help=SET_HELP),
    seed: int = typer.Option(None, "--seed", help=SEED_HELP),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    within_class: bool = typer.Option(
        False, "--within-class", help="Only rank within each class [default: both kinds]."
    ),
    all_classes: bool = typer.Option(
        False, "--all-classes", help="Only rank over all test images [default: both kinds]."
    ),
    top: int = typer.Option(10, "--top", help="How many of the best scores to print."),
    min_positives: int = typer.Option(
        5, "--min-positives", help="Print only scores of attributes with this many positives."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """PR-AUC (scikit-learn's average precision) of every distilled image x attribute (x class).

    Test images are ranked by each distilled image's influence, highest first; the positives
    are the test images with the attribute (within-class: among the test images of the class).
    Stores AP, positive rate, positives and lift (AP / positive rate); a re-run replaces.
    """
    from ddsem.db.scores import replace_scores
    from ddsem.semantics import ESTIMATOR, ESTIMATOR_TEXT, load_inputs, score_attributes, score_rows

    if within_class and all_classes:
        raise UserError("choose one of --within-class and --all-classes (neither: both)")
    db = common.open_database()
    inputs = load_inputs(
        db,
        method=method,
        set_name=common.default_set_name(db, set_name, method),
        seed=seed,
        mean_over_seeds=mean_over_seeds,
    )
    do_all = not within_class
    do_within = not all_classes
    n, t = inputs.influence.shape
    start = time.perf_counter()
    bar = (
        nullcontext(None)  # --json: stdout carries only the JSON
        if as_json
        else common.progress(n * (do_all + do_within), "ranking test images")
    )
    with bar as advance:
        scores = score_attributes(
            inputs.influence,
            inputs.test_classes,
            inputs.labels,
            inputs.num_classes,
            all_classes=do_all,
            within_class=do_within,
            progress=advance,
        )
    seconds = time.perf_counter() - start
    rows, undefined = score_rows(inputs, scores)
    stored = replace_scores(
        db, inputs.set_id, inputs.scope, inputs.context, scores.class_filters, rows
    )

    def class_text(c: int) -> str:
        return "all" if c < 0 else inputs.classes[c]

    best = [r for r in rows if r["positives"] >= min_positives]  # strongest signals, by lift
    best.sort(key=lambda r: (-r["lift"], r["distilled_index"]))
    names = {a.id: a.name for a in inputs.attributes}
    top_rows = [
        {
            "distilled_index": r["distilled_index"],
            "distilled_class": inputs.classes[int(inputs.distilled_labels[r["distilled_index"]])],
            "attribute": names[r["attribute_id"]],
            "class_filter": class_text(r["class_filter"]),
            "ap": r["ap"],
            "positive_rate": r["positive_rate"],
            "positives": r["positives"],
            "lift": r["lift"],
        }
        for r in best[: max(top, 0)]
    ]
    summary = {
        "set": inputs.set_name,
        "method": inputs.method,
        "scope": inputs.scope,
        "context": inputs.context,
        "estimator": ESTIMATOR,
        "distilled_images": n,
        "test_images": t,
        "unannotated_test_images_skipped": inputs.skipped_unannotated,
        "attributes": len(inputs.attributes),
        "class_filters": [class_text(c) for c in scores.class_filters],
        "stored": stored,
        "undefined_no_positives": undefined,
        "seconds": round(seconds, 3),
        "top": top_rows,
    }
    if as_json:
        common.print_json(summary)
        return
    seeds = ", ".join(map(str, inputs.seeds))
    common.echo(
        f"set {inputs.set_name!r} ({inputs.method}), influence scope {inputs.scope} "
        f"(seed{'s' if len(inputs.seeds) > 1 else ''} {seeds}): {n} distilled images x {t} "
        f"annotated test images x {len(inputs.attributes)} attributes"
    )
    if inputs.skipped_unannotated:
        common.echo(
            f"left out {inputs.skipped_unannotated} test images of the run that are not annotated "
            "yet (`ddsem annotate` adds them)"
        )
    kinds = " and ".join(
        k for k, on in (("over all classes", do_all), ("within each class", do_within)) if on
    )
    common.echo(f"stored {stored} scores, {kinds}, in {seconds:.2f} s; estimator: {ESTIMATOR_TEXT}")
    if undefined:
        common.echo(
            f"{undefined} (attribute, class) pairs have no positive test image: AP is undefined "
            "there and nothing is stored"
        )
    if top_rows:
        common.table(
            f"highest lift (AP / positive rate; attributes with >= {min_positives} positives)",
            ["distilled", "its class", "attribute", "among", "AP", "pos. rate", "lift"],
            [
                [
                    r["distilled_index"],
                    r["distilled_class"],
                    r["attribute"],
                    r["class_filter"],
                    f"{r['ap']:.3f}",
                    f"{r['positive_rate']:.3f}",
                    f"{r['lift']:.2f}",
                ]
                for r in top_rows
            ],
        )


def query(
    text: str = typer.Argument(
        ..., help='The question, e.g. "yellow cars" or "planes on a runway".'
    ),
    method: str = typer.Option(None, "--method", help=METHOD_HELP),
    set_name: str = typer.Option(None, "--set", help=SET_HELP),
    seed: int = typer.Option(None, "--seed", help=SEED_HELP),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    top: int = typer.Option(5, "--top", help="How many distilled images to show."),
    images: int = typer.Option(
        5, "--images", help="Most influenced matching test images shown per distilled image."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Which distilled images drive a semantic? Ranked by average precision, with lift."""
    from ddsem.semantics import ESTIMATOR_TEXT, ask

    if top < 1 or images < 0:
        raise UserError("--top must be at least 1 and --images at least 0")
    db = common.open_database()
    answer = ask(
        db,
        text,
        method=method,
        set_name=common.default_set_name(db, set_name, method),
        seed=seed,
        mean_over_seeds=mean_over_seeds,
        top=top,
        images_per_result=images,
    )
    if as_json:
        common.print_json(answer.as_json())
        return
    parsed = answer.parsed
    common.echo(parsed.describe())
    where = f"{parsed.class_name} " if parsed.class_name else ""
    what = " and ".join(parsed.attributes)
    common.echo(
        f"set {answer.set_name!r} ({answer.method}), scope {answer.scope}: {answer.positives} of "
        f"{answer.total} annotated {where}test images have {what} "
        f"(positive rate {answer.positive_rate:.3f})"
    )
    common.table(
        f"distilled images ranked by {ESTIMATOR_TEXT}",
        ["rank", "distilled", "its class", "AP", "lift", f"most influenced {what} test images"],
        [
            [
                i + 1,
                r.distilled_index,
                r.class_name,
                f"{r.ap:.3f}",
                f"{r.lift:.2f}",
                "  ".join(f"#{h.test_index} ({h.influence:+.3g})" for h in r.top_images),
            ]
            for i, r in enumerate(answer.results)
        ],
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "all"


def report(
    out: str = typer.Option(..., "--out", help="Folder for the figures and tables."),
    method: str = typer.Option(None, "--method", help=METHOD_HELP),
    set_name: str = typer.Option(None, "--set", help=SET_HELP),
    seed: int = typer.Option(None, "--seed", help=SEED_HELP),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    question: str = typer.Option(
        None,
        "--query",
        help='PR curves for this question (e.g. "yellow cars") [default: the highest-lift pair].',
    ),
    top: int = typer.Option(5, "--top", help="Distilled images drawn in the PR curves."),
    per_image: int = typer.Option(
        3, "--attributes-per-image", help="Attributes listed per distilled image in the table."
    ),
    min_positives: int = typer.Option(
        5, "--min-positives", help="Table: only attributes with this many positives."
    ),
) -> None:
    """Figures and tables of the semantics: PR curves, influence grids, Table 1 (MD, CSV).

    PR curves of the distilled images that best find an attribute (paper Fig 9), each distilled
    image beside the 3x3 grid of its most influenced test images (Fig 10), and a Table-1-style
    summary of each image's most predictive attributes, from the scores `ddsem rank` stored."""
    import csv

    import numpy as np

    from ddsem.db.codec import png_to_array
    from ddsem.db.scores import image_pngs, read_scores
    from ddsem.db.sets import set_pngs
    from ddsem.semantic_plots import influence_grid, pr_curves
    from ddsem.semantics import (
        ESTIMATOR_TEXT,
        ParsedQuery,
        Vocabulary,
        average_precision,
        load_inputs,
        parse_query,
        precision_recall_curve,
        query_columns,
    )

    if top < 1 or per_image < 1:
        raise UserError("--top and --attributes-per-image must be at least 1")
    out_dir = Path(out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out must be a folder; {out_dir} is a file")
    db = common.open_database()
    inputs = load_inputs(
        db,
        method=method,
        set_name=common.default_set_name(db, set_name, method),
        seed=seed,
        mean_over_seeds=mean_over_seeds,
    )
    scores = read_scores(db, inputs.set_id, inputs.scope, context=inputs.context)
    if not scores:
        raise UserError(
            f"no scores for set {inputs.set_name!r} at scope {inputs.scope}: run "
            f"`ddsem rank --set {inputs.set_name} {inputs.scope_option()}` first"
        )
    if question:
        parsed = parse_query(question, Vocabulary(inputs.attributes, inputs.classes))
    else:
        candidates = [r for r in scores if r.positives >= min_positives] or scores
        best = max(candidates, key=lambda r: (r.lift, -r.distilled_index))
        parsed = ParsedQuery(
            text=f"{best.attribute} {inputs.classes[best.class_filter] if best.class_filter >= 0 else ''}".strip(),
            attributes=[best.attribute],
            class_index=best.class_filter if best.class_filter >= 0 else None,
            class_name=inputs.classes[best.class_filter] if best.class_filter >= 0 else None,
        )
    members, positives = query_columns(inputs, parsed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    # Fig. 9: PR curves of the distilled images whose ranking best finds the attribute
    ap = average_precision(inputs.influence[:, members], positives[members][:, None])[:, 0, 0]
    rate = float(positives.sum() / members.sum())
    curves = []
    for k in np.argsort(-ap, kind="stable")[:top].tolist():
        recall, precision = precision_recall_curve(inputs.influence[k, members], positives[members])
        label = inputs.classes[int(inputs.distilled_labels[k])]
        curves.append((f"distilled #{k} ({label}) AP {ap[k]:.3f}", recall, precision))
    what = " & ".join(parsed.attributes)
    among = parsed.class_name or "all classes"
    written.append(
        pr_curves(
            curves,
            rate,
            f"{what} among {among} ({inputs.set_name}, {inputs.scope})",
            out_dir / f"pr_{_slug(what)}_{_slug(among)}.png",
        )
    )

    # Fig. 10: each distilled image beside its 9 most influenced test images
    n = inputs.influence.shape[0]
    top9 = np.argsort(-inputs.influence, axis=1, kind="stable")[:, :9]
    pngs = image_pngs(db, inputs.image_ids[top9].ravel().tolist())
    distilled = {i: png for i, _, png in set_pngs(db, inputs.set_id)}
    with common.progress(n, "drawing influence grids") as advance:
        for k in range(n):
            cols = top9[k].tolist()
            tiles = [
                png_to_array(pngs[int(inputs.image_ids[j])])
                if int(inputs.image_ids[j]) in pngs
                else None
                for j in cols
            ]
            titles = [
                f"#{int(inputs.test_indices[j])} {inputs.classes[int(inputs.test_classes[j])]}\n"
                f"{inputs.influence[k, j]:+.3g}"
                for j in cols
            ]
            label = inputs.classes[int(inputs.distilled_labels[k])]
            written.append(
                influence_grid(
                    png_to_array(distilled[k]),
                    f"distilled #{k} ({label})",
                    tiles,
                    titles,
                    out_dir / "influence" / f"distilled_{k:03d}.png",
                )
            )
            advance(1)

    # Table 1: each distilled image's most predictive attributes (by lift) within its class
    has_within = any(r.class_filter >= 0 for r in scores)
    by_image: dict[int, list] = {}
    for r in scores:
        own = int(inputs.distilled_labels[r.distilled_index])
        if r.positives >= min_positives and r.class_filter == (own if has_within else -1):
            by_image.setdefault(r.distilled_index, []).append(r)
    table_rows = []
    for k in range(n):
        ranked = sorted(by_image.get(k, []), key=lambda r: (-r.lift, r.attribute))[:per_image]
        for i, r in enumerate(ranked):
            table_rows.append((k, inputs.classes[int(inputs.distilled_labels[k])], i + 1, r))
    csv_path = out_dir / "table1.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["distilled_index", "class", "rank", "attribute", "among", "ap", "lift",
             "positive_rate", "positives"]
        )  # fmt: skip
        for k, cls, i, r in table_rows:
            among_text = inputs.classes[r.class_filter] if r.class_filter >= 0 else "all"
            w.writerow(
                [k, cls, i, r.attribute, among_text, f"{r.ap:.6f}", f"{r.lift:.6f}",
                 f"{r.positive_rate:.6f}", r.positives]
            )  # fmt: skip
    written.append(csv_path)
    md_path = out_dir / "table1.md"
    lines = [
        f"# What the distilled images of {inputs.set_name!r} ({inputs.method}) store",
        "",
        f"Scope {inputs.scope}; {ESTIMATOR_TEXT} of each distilled image's influence ranking of "
        f"the test images {'of its own class' if has_within else '(all classes)'}; attributes "
        f"with at least {min_positives} positives, ordered by lift (AP / positive rate).",
        "",
        "| distilled image | class | most predictive attributes (AP, lift) |",
        "|---|---|---|",
    ]
    for k in range(n):
        cells = [
            f"{r.attribute} ({r.ap:.2f}, {r.lift:.1f}x)" for kk, _, _, r in table_rows if kk == k
        ]
        label = inputs.classes[int(inputs.distilled_labels[k])]
        lines.append(f"| {k} | {label} | {'; '.join(cells) or '-'} |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(md_path)

    common.echo(f"PR curves for {what} among {among}: {written[0]}")
    common.echo(f"{n} influence grids: {out_dir / 'influence'}")
    common.echo(f"table: {md_path} and {csv_path}")
