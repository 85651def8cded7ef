"""Job ``influence check``: validate a set's stored influence runs (paper Figures 7 and 8).

Seed consistency and context independence (Pearson), influence against pixel distance
(Spearman) and the numerical noise floor: the run's reference model retrained alone, by the
other arithmetic path, from the stored initial state and configuration. Figures go to ``out``.
Reads the database; writes only the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import DataSource

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ddsem.db.influence import InfluenceRunInfo
    from ddsem.influence.checks import NoiseFloor
    from ddsem.jobs.influence import SetInputs
    from ddsem.jobs.workspace import Workspace


@dataclass(frozen=True)
class CheckRequest:
    set_name: str | None = None
    method: str | None = None
    out: str | None = None  # folder for the PNG scatter plots; None: no figures
    data: DataSource = None
    noise: bool = True  # retrain the reference model once to measure the noise floor


@dataclass
class CheckReport:
    set_name: str
    runs: dict[str, list[int]]  # context -> seeds of its complete runs
    figures: list[str] = field(default_factory=list)
    seed_consistency: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] | None = None
    pixel_distance: dict[str, Any] | None = None
    noise_floor: list[dict[str, Any]] | None = None
    tf32: str = ""
    lines: list[str] = field(default_factory=list)  # the findings, one line each

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "runs": self.runs,
            "figures": self.figures,
            "seed_consistency": self.seed_consistency,
            "context": self.context,
            "pixel_distance": self.pixel_distance,
            "noise_floor": self.noise_floor,
            "tf32": self.tf32,
        }

    def describe(self) -> list[str]:
        """The lines a person reads: the findings, then the figures written."""
        return [*self.lines, *(f"wrote {f}" for f in self.figures)]


def run(ws: Workspace, req: CheckRequest) -> CheckReport:
    import numpy as np

    from ddsem.data import normalize
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.influence.checks import (
        align,
        correlate,
        distance_spearman,
        pixel_distances,
        seed_mean,
    )
    from ddsem.jobs.influence import load_inputs

    dev = ws.torch_device()
    inputs = load_inputs(ws.db, req.set_name, req.method, req.data)
    out_dir = Path(req.out).expanduser() if req.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out is a file, not a folder: {out_dir}")
    name = inputs.set.name
    runs = {c: list_runs(ws.db, inputs.set.id, context=c) for c in ("distilled", "real")}
    if not runs["distilled"] and not runs["real"]:
        raise UserError(
            f"no complete influence run for set {name!r}: "
            f"run `ddsem influence --set {name} --seeds 0,1` first"
        )
    loaded = {c: [load_influence(ws.db, r.id) for r in rs] for c, rs in runs.items()}
    report = CheckReport(name, {c: [r.seed for r in rs] for c, rs in runs.items()})
    lines = report.lines
    lines.append(f"set {name!r}: {inputs.set.num_images} distilled images")

    def figure(filename: str, x, y, per_image, xlabel: str, ylabel: str, title: str, coef: str):
        from ddsem.influence.figures import scatter_check

        assert out_dir is not None
        path = scatter_check(
            x, y, per_image, out_dir / filename,
            xlabel=xlabel, ylabel=ylabel, title=title, coefficient=coef,
        )  # fmt: skip
        report.figures.append(str(path))

    # Seed consistency (Fig. 8 left).
    if len(loaded["distilled"]) >= 2:
        ms, _ = align([m for m, _ in loaded["distilled"]], [t for _, t in loaded["distilled"]])
        rs = runs["distilled"]
        for a in range(len(ms)):
            for b in range(a + 1, len(ms)):
                corr = correlate(ms[a], ms[b])
                report.seed_consistency.append(
                    {"seeds": [rs[a].seed, rs[b].seed], **corr.as_json()}
                )
                lines.append(
                    f"seed {rs[a].seed} vs seed {rs[b].seed}: Pearson overall "
                    f"{corr.overall:.3f}, per image mean {corr.mean:.3f} "
                    f"(min {np.nanmin(corr.per_image):.3f})"
                )
                if out_dir is not None and a == 0 and b == 1:
                    figure(
                        "seeds.png", ms[a], ms[b], corr.per_image,
                        f"influence, seed {rs[a].seed}", f"influence, seed {rs[b].seed}",
                        f"seed consistency: Pearson {corr.overall:.3f}", "Pearson r",
                    )  # fmt: skip
    else:
        lines.append("seed consistency: needs two distilled-context seeds (--seeds 0,1)")

    # Context independence (Fig. 8 right): seed means of each context, on shared test images.
    if loaded["distilled"] and loaded["real"]:
        both = loaded["distilled"] + loaded["real"]
        ms, _ = align([m for m, _ in both], [t for _, t in both])
        k = len(loaded["distilled"])
        dist_mean, real_mean = np.mean(ms[:k], axis=0), np.mean(ms[k:], axis=0)
        corr = correlate(dist_mean, real_mean)
        report.context = corr.as_json()
        lines.append(
            f"distilled vs real context: Pearson overall {corr.overall:.3f}, "
            f"per image mean {corr.mean:.3f}"
        )
        if out_dir is not None:
            figure(
                "context.png", dist_mean, real_mean, corr.per_image,
                "influence, distilled context", "influence, real context",
                f"context independence: Pearson {corr.overall:.3f}", "Pearson r",
            )  # fmt: skip
    else:
        lines.append("context independence: needs a distilled and a real-context run")

    # Influence vs pixel distance (Fig. 7).
    base = "distilled" if loaded["distilled"] else "real"
    mean_infl, common = seed_mean([m for m, _ in loaded[base]], [t for _, t in loaded[base]])
    distances = pixel_distances(inputs.images, normalize(inputs.data.test_x[common]).numpy())
    pix = distance_spearman(mean_infl, distances)
    report.pixel_distance = {"context": base, **pix.as_json()}
    lines.append(
        f"influence vs pixel closeness ({base} context): Spearman per image mean {pix.mean:.3f}, "
        f"overall {pix.overall:.3f} (the paper finds only a weak correlation)"
    )
    if out_dir is not None:
        figure(
            "pixel_distance.png", distances, mean_infl, pix.per_image,
            "L2 distance in normalised pixels", "influence",
            f"influence vs pixel distance: Spearman {pix.overall:.3f}", "Spearman rho",
        )  # fmt: skip

    # Numerical noise floor.
    if req.noise:
        floors = noise_floors(ws, inputs, runs[base][0], loaded[base][0][0])
        report.noise_floor = [f.as_json() for f in floors]
        for f in floors:
            lines.append(
                f"noise floor, {f.compared}: test losses differ by up to {f.loss_diff_max:.2e} "
                f"(std {f.loss_diff_std:.2e}); influence std {f.influence_std:.2e}, median "
                f"|influence| {f.influence_abs_median:.2e}; {100 * f.above_floor:.1f}% of the "
                f"influences exceed the largest difference; signal/noise {f.signal_to_noise:.3g}"
            )
    report.tf32 = tf32_note(dev)
    lines.append(report.tf32)
    return report


def noise_floors(
    ws: Workspace, inputs: SetInputs, run: InfluenceRunInfo, influence: np.ndarray
) -> list[NoiseFloor]:
    """Retrain the stored run's reference model alone, from its initial state and config, by
    the other arithmetic path (and, on CUDA, once more with TF32 on), and compare its test
    losses with those of the population model the run stored."""
    import torch

    from ddsem.db.influence import load_influence, model_results, run_init_state
    from ddsem.influence.checks import noise_floor
    from ddsem.influence.loo import REFERENCE, train_and_evaluate
    from ddsem.jobs.influence import Training, evaluation_set, population

    dev = ws.torch_device()
    training = Training.from_config(run.config)
    indices, losses, _ = model_results(ws.db, run.id)
    stored = losses[indices.index(REFERENCE)]
    _, test_indices = load_influence(ws.db, run.id)
    init = {k: torch.from_numpy(v) for k, v in run_init_state(ws.db, run.id).items()}
    pop = population(inputs, training)
    test_x, test_y = evaluation_set(inputs, test_indices)
    run_path = "batched" if "cuda" in run.device else "loop"
    run_device = run.device.split(",")[0]
    alone_path = "loop" if run_path == "batched" else "batched"
    trials: list[tuple[str, bool]] = [(alone_path, False)]
    if dev.type == "cuda":
        trials.append(("loop", True))
    floors = []
    for path, tf32 in trials:
        description = f"noise floor: reference model alone ({path})"
        with ws.progress.phase(description, training.train.steps) as advance:
            result = train_and_evaluate(
                training.model, training.train, pop, [REFERENCE], init, test_x, test_y,
                device=dev, path=path, progress=advance, tf32=tf32,
            )  # fmt: skip
        compared = (
            f"seed {run.seed} reference model in the population ({run_path}, {run_device}) vs "
            f"alone ({path}, {dev.type}{', TF32 on' if tf32 else ''})"
        )
        floors.append(noise_floor(stored, result.losses[0].numpy(), influence, compared))
    return floors


def tf32_note(dev: torch.device) -> str:
    if dev.type == "cuda":
        return (
            "TF32: influence runs switch it off (float32 matmuls and convolutions); the TF32 line "
            "above shows the noise floor it would add."
        )
    return (
        "TF32: not used on the CPU. On an NVIDIA GPU (Ampere or newer) PyTorch runs cuDNN "
        "convolutions in TF32 by default (10-bit mantissa, ~1e-3 relative), which raises the "
        "noise floor; influence runs switch it off, and `check --device cuda` measures it."
    )
