"""``ddsem analyze list``: the analyses stored in the database (reads only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddsem.jobs.analyze import KINDS
from ddsem.jobs.common import check

if TYPE_CHECKING:
    from ddsem.jobs.workspace import Workspace

# the stored units of ``ddsem analyze``; "real-model" rows are the models trained on real data
# that the analyses share, the others a kind's parts (a pool's chunks, an embedding)
LISTED = (*KINDS, "real-model", "agreement-pool", "inverse-embedding")


@dataclass
class StoredUnit:
    id: int
    kind: str
    what: str  # the set(s) or model it is about
    created_at: str
    figure: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "what": self.what,
                "created_at": self.created_at, "figure": self.figure}  # fmt: skip


def _what(params: dict[str, Any]) -> str:
    if "set" in params:
        return str(params["set"])
    if "sets" in params:
        return ", ".join(map(str, params["sets"]))
    model = params.get("model", {})
    if model:
        return (
            f"{model.get('arch', '?')} width {model.get('width', '?')}, seed {params.get('seed')}"
        )
    return ""


def list_stored(ws: Workspace, kind: str | None = None) -> list[StoredUnit]:
    """Every stored unit of ``kind`` (every analyze kind when None), oldest first."""
    from ddsem.db.analyses import list_analyses

    if kind is not None:
        check(kind in LISTED, f"unknown analysis kind {kind!r}: use {', '.join(LISTED)}")
    rows = list_analyses(ws.db, (kind,) if kind else LISTED)
    return [StoredUnit(r.id, r.kind, _what(r.params), r.created_at, r.figure_path) for r in rows]
