"""Jobs: the one place where computation meets storage.

Every face (the CLI, the TUI, the demo, benchmarks, a notebook) runs work through a job, and a
job module has the same four parts:

- a frozen ``...Request`` dataclass: what to compute, validated where it is built
  (``__post_init__`` raises ``UserError`` with one clear line);
- ``plan(ws, request)``: what is stored, what is missing, and the refusal of a configuration
  that conflicts with stored work, all before anything is written;
- ``run(ws, request)``: the resumable work; it reports through ``ws.progress`` (a small
  protocol, ``ddsem.jobs.progress``) and never prints;
- a ``...Result`` dataclass with ``as_json()`` (the stable ``--json`` keys).

Jobs import no typer, rich or textual; compute packages (``train``, ``distill``, ``influence``,
``curvature``, ``annotate``, ``semantics``, ...) never import jobs or ``ddsem.db``; only
``ddsem.db`` touches the database. import-linter checks these rules (``pyproject.toml``).

Import a job module where it is used (``from ddsem.jobs import influence``): this package's
``__init__`` stays empty so that ``ddsem --help`` never loads torch.
"""

from ddsem.jobs.progress import SILENT, Progress, Recorder
from ddsem.jobs.workspace import Workspace

__all__ = ["SILENT", "Progress", "Recorder", "Workspace"]
