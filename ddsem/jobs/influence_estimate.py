"""Job ``influence --estimator if|tracin|trak``: approximate influence from one training per
seed (``ddsem.influence.estimators``), stored like an exact run under its own estimator key,
so ``rank``, ``query``, ``report``, ``show`` and the TUI read it the same way (issue 20).

An estimate is one piece of work per seed: it is stored whole in one transaction, so a killed
run leaves nothing of that seed and its re-run computes it again; seeds already stored with the
same config are skipped. Several processes on one database (``--processes N``, or the same
command twice) split the seeds by claim.

    ws = Workspace.open("runs.db")
    influence.run(ws, InfluenceRequest(method="dm", estimator="tracin", seeds=(0, 1)))
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.influence import (
    InfluenceRequest,
    InfluenceResult,
    SeedSummary,
    evaluation_set,
    register_images,
    setup,
)

if TYPE_CHECKING:
    from ddsem.db.influence import InfluenceRunInfo
    from ddsem.jobs.influence import RunSetup
    from ddsem.jobs.workspace import Workspace

WAIT_SECONDS = 2.0  # how often a process whose remaining seeds another one holds looks again


def require_package(estimator: str) -> None:
    """One line naming the package to install when the estimator's library is missing."""
    from ddsem.influence.estimators import check_estimator

    check_estimator(estimator)


def _key(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without its provenance (what the run key is made of)."""
    return {k: v for k, v in config.items() if k != "provenance"}


def run_config(base: RunSetup, req: InfluenceRequest) -> dict[str, Any]:
    """The run's config: exact LOO's (model, training, test images) and the estimator's."""
    from ddsem.config import to_dict

    return {**base.config, "estimator": {"name": req.estimator, **to_dict(req.estimation)}}


def run(ws: Workspace, req: InfluenceRequest) -> InfluenceResult:
    """Refuse what cannot run (package, config clash) before anything is written, then estimate
    and store every seed not yet stored."""
    from ddsem.db import claims
    from ddsem.db.codec import config_hash
    from ddsem.db.influence import find_run
    from ddsem.jobs.common import config_diff

    require_package(req.estimator)
    base = setup(ws, req)
    config = run_config(base, req)
    digest = config_hash(config)
    set_ = base.inputs.set
    for seed in req.seeds:
        old = find_run(ws.db, set_.id, seed, req.context, req.estimator)
        if old is not None and old.config_hash != digest and not req.overwrite:
            raise UserError(
                f"set {set_.name!r} already has a {old.status} {req.estimator} run for seed "
                f"{seed} with another configuration ({config_diff(_key(old.config), config)}); pass "
                "--overwrite to replace it"
            )
    ws.db.require_writable()
    register_images(ws.db, base.inputs, base.test_indices, None)
    owner = claims.new_owner()
    summaries: dict[int, SeedSummary] = {}
    pending = list(req.seeds)
    said_waiting = False
    while pending:
        progressed = False
        for seed in list(pending):
            old = find_run(ws.db, set_.id, seed, req.context, req.estimator)
            if old is not None and old.status == "complete" and old.config_hash == digest:
                if seed not in summaries:  # stored before this job, or by another process now
                    ws.progress.note(
                        f"seed {seed}: the {req.estimator} estimate is already stored; "
                        "nothing to do"
                    )
                summaries[seed] = SeedSummary.of(set_.name, old, skipped=True)
                pending.remove(seed)
                progressed = True
                continue
            key = f"estimate:{set_.id}:{req.estimator}:{seed}"
            if not claims.claim(ws.db, key, owner):
                continue  # another process is estimating this seed
            try:
                info = _estimate_seed(ws, req, base, config, digest, seed)
            finally:
                claims.release(ws.db, key, owner)
            summaries[seed] = SeedSummary.of(set_.name, info, skipped=False)
            pending.remove(seed)
            progressed = True
        if pending and not progressed:
            if not said_waiting:
                ws.progress.note(
                    f"seeds {', '.join(map(str, pending))} are being estimated by another "
                    "process; waiting for them"
                )
                said_waiting = True
            time.sleep(WAIT_SECONDS)
    # a process killed between storing a seed and releasing its claim left the claim behind
    claims.clear_abandoned(ws.db, f"estimate:{set_.id}:{req.estimator}:")
    return InfluenceResult(set_.name, tuple(summaries[s] for s in req.seeds))


def _estimate_seed(
    ws: Workspace,
    req: InfluenceRequest,
    base: RunSetup,
    config: dict[str, Any],
    digest: str,
    seed: int,
) -> InfluenceRunInfo:
    """Train one model from seed's initial state, estimate, store the run whole."""
    import numpy as np
    import torch

    from ddsem.db.codec import state_to_blob
    from ddsem.db.influence import find_run, store_estimated_run
    from ddsem.influence import estimators
    from ddsem.influence.loo import top_k
    from ddsem.models import init_state

    inputs, training = base.inputs, base.training
    init = init_state(training.model, seed)  # the same state exact LOO's models start from
    test_x, test_y = evaluation_set(inputs, base.test_indices)
    images = torch.from_numpy(inputs.images)
    labels = torch.from_numpy(inputs.labels)
    total = estimators.progress_total(
        req.estimator, training.train, len(labels), len(test_y), req.estimation
    )
    t0 = time.perf_counter()
    with ws.progress.phase(f"seed {seed}: {req.estimator} estimate", total) as advance:
        result = estimators.estimate_influence(
            req.estimator,
            training.model,
            training.train,
            images,
            labels,
            init,
            test_x,
            test_y,
            req.estimation,
            device=base.device,
            progress=advance,
        )
    seconds = time.perf_counter() - t0
    influence = result.influence
    if not np.isfinite(influence).all():
        raise UserError(
            f"seed {seed}: the {req.estimator} estimate is not finite (training diverged with "
            f"--lr {training.train.lr:g}?); nothing was stored"
        )
    positions, values = top_k(influence, training.influence.top_k)
    stored = {**config, "provenance": {**result.details, "trainings": result.trainings}}
    store_estimated_run(
        ws.db,
        set_id=inputs.set.id,
        seed=seed,
        context=training.influence.context,
        estimator=req.estimator,
        config=stored,
        config_hash=digest,
        test_indices=base.test_indices,
        test_labels=inputs.data.test_y[base.test_indices],
        trainings=result.trainings,
        init_state=state_to_blob(init),
        influence=influence,
        top_positions=positions,
        top_values=values,
        full_accuracy=result.full_accuracy,
        device=str(base.device),
        wall_seconds=seconds,
    )
    info = find_run(ws.db, inputs.set.id, seed, training.influence.context, req.estimator)
    assert info is not None
    ws.progress.note(
        f"seed {seed}: {req.estimator} estimate of {len(labels)} x {len(test_y)} influences "
        f"from {result.trainings} training, full-set model test accuracy "
        f"{100 * result.full_accuracy:.2f}%, {seconds:.1f} s"
    )
    return info
