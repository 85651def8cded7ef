"""The ``ddsem`` command line: a thin Typer face over the library.

Each command group lives in its own module (``ddsem/cli/<group>.py``) and imports heavy
libraries (torch, transformers, faiss, textual) inside its functions, so ``ddsem --help`` and
``import ddsem.cli`` stay instant. Bad input raises ``UserError``: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys

import typer

from ddsem.cli import common
from ddsem.errors import UserError

app = typer.Typer(
    name="ddsem",
    help=(
        "What do distilled data sets store? Exact leave-one-out influence of distilled images on "
        "real test images, semantic attributes, curvature, in one SQLite database. "
        "The global options --db, --device, --seed and --quiet go before or after the command."
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
    seed: int = typer.Option(
        None,
        "--seed",
        help="The seed: of every random choice of new work [default: 0]; for commands that read "
        "stored influence, the run of this seed [default: the only run, or the mean].",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results and errors."),
) -> None:
    common.OPTIONS.db = db
    common.OPTIONS.device = device
    common.OPTIONS.seed = seed
    common.OPTIONS.quiet = quiet


def _register() -> None:
    """Mount every command group; each lives in its own module of ``ddsem.cli``."""
    from ddsem.cli import (
        analyze,
        annotate,
        curvature,
        data,
        dbcmd,
        demo,
        distill,
        evaluate,
        influence,
        rank,
        sets,
        tui,
    )

    app.command("demo")(demo.demo)
    app.add_typer(data.app, name="data")
    app.add_typer(sets.app, name="sets")
    app.add_typer(distill.app, name="distill")
    app.command("evaluate")(evaluate.evaluate)
    app.add_typer(influence.app, name="influence")
    annotate.register(app)  # annotate, attributes
    rank.register(app)  # rank, query, report
    app.command("curvature")(curvature.curvature)
    app.command("landscape")(curvature.landscape)
    app.add_typer(analyze.app, name="analyze")
    app.command("tui")(tui.tui)
    app.add_typer(dbcmd.app, name="db")


_register()


GLOBAL_VALUED = ("--db", "--device", "--seed")
GLOBAL_FLAGS = ("--quiet", "-q")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move the global options to the front, wherever they were given, so that
    ``ddsem distill --device cpu ...`` means ``ddsem --device cpu distill ...`` for every
    command. Stops at ``--``; an option's value is taken with it (``--db x`` or ``--db=x``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in GLOBAL_FLAGS or any(arg.startswith(f"{o}=") for o in GLOBAL_VALUED):
            front.append(arg)
        elif arg in GLOBAL_VALUED:
            front.extend(argv[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; UserError -> one line on stderr and 2."""
    argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    common.OPTIONS = common.GlobalOptions()  # an in-process re-run starts from the defaults
    try:
        result = app(args=argv, prog_name="ddsem", standalone_mode=False)
        if result == 130:  # typer returns Ctrl-C as 130 when not standalone (no exception)
            sys.stderr.write("interrupted; finished work is kept and a re-run resumes\n")
        return result if isinstance(result, int) else 0
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except typer.Exit as e:  # typer turns Ctrl-C into Exit(130)
        if e.exit_code == 130:
            sys.stderr.write("interrupted; finished work is kept and a re-run resumes\n")
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt) as e:
        if isinstance(e.__cause__, EOFError):  # typer wraps any EOFError in Abort: a bug, not ^C
            raise e.__cause__ from None
        sys.stderr.write("interrupted; finished work is kept and a re-run resumes\n")
        return 130
    except typer.TyperException as e:  # usage errors: bad option values, unknown commands
        if type(e).__name__ == "NoArgsIsHelpError":  # `ddsem` or `ddsem sets` alone: the help
            sys.stdout.write(e.format_message() + "\n")
            return 0
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        sys.stderr.write(f"error: {message} (see --help)\n")
        return getattr(e, "exit_code", 2) or 2


def main() -> None:
    sys.exit(run())
