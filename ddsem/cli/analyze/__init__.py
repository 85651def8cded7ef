"""``ddsem analyze <kind>``: the paper's analyses on stored distilled sets, faces over
``ddsem.jobs.analyze``. One module per kind, each defining ``command``."""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    help="The paper's analyses on distilled sets: recognition (Fig. 5), inverse (Fig. 2), "
    "clipping (Fig. 3), extra-training (appendix E), class-influence (appendix D), mixing "
    "(Fig. 3 right), agreement (Fig. 4). "
    "Each stores its result, draws its figure and is resumable.",
    no_args_is_help=True,
)

# kind -> module of ddsem.cli.analyze
MODULES = {
    "recognition": "recognition",
    "inverse": "inverse",
    "clipping": "clipping",
    "extra-training": "extra_training",
    "class-influence": "class_influence",
    "mixing": "mixing",
    "agreement": "agreement",
    "list": "listing",
}

for _kind, _module in MODULES.items():
    _name = f"ddsem.cli.analyze.{_module}"
    if importlib.util.find_spec(_name) is not None:
        app.command(_kind)(importlib.import_module(_name).command)
