"""The ``ddsem`` command line: a thin Typer face over the library.

Each command group lives in its own module (``ddsem/cli/<group>.py``) and imports heavy
libraries (torch, transformers, faiss, textual) inside its functions, so ``ddsem --help`` and
``import ddsem.cli`` stay instant. Bad input raises ``UserError``: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys

import click
import typer

from ddsem.cli import common
from ddsem.errors import UserError

app = typer.Typer(
    name="ddsem",
    help=(
        "What do distilled data sets store? Exact leave-one-out influence of distilled images on "
        "real test images, semantic attributes, curvature, in one SQLite database."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback()
def _global(
    db: str = typer.Option(
        None,
        "--db",
        envvar="DDSEM_DB",
        help="Database file or SQLAlchemy URL [default: ./ddsem.db].",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random choice."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results and errors."),
) -> None:
    common.OPTIONS.db = db
    common.OPTIONS.device = device
    common.OPTIONS.seed = seed
    common.OPTIONS.quiet = quiet


def _register() -> None:
    """Mount every command group. A group is a module with ``app`` (a Typer) or ``register``."""
    from ddsem.cli import data, dbcmd, sets

    app.add_typer(data.app, name="data")
    app.add_typer(sets.app, name="sets")
    app.add_typer(dbcmd.app, name="db")
    from ddsem.cli import distill as distill_commands  # distill [experts], evaluate
    from ddsem.cli import evaluate as evaluate_commands

    app.add_typer(distill_commands.app, name="distill")
    app.command("evaluate")(evaluate_commands.evaluate)
    from ddsem.cli import influence as influence_commands  # influence [show|check]

    app.add_typer(influence_commands.app, name="influence")
    from ddsem.cli import rank as rank_commands  # top-level rank, query, report

    rank_commands.register(app)

    from ddsem.cli import annotate as annotate_commands  # annotate, attributes

    annotate_commands.register(app)

    from ddsem.cli import tui as tui_command  # top-level tui

    app.command("tui")(tui_command.tui)


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; UserError -> one line on stderr and 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=argv, prog_name="ddsem", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted; finished work is kept and a re-run resumes\n")
        return 130


def main() -> None:
    sys.exit(run())
