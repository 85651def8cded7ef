"""Approximate influence from ONE training (issue 20): TracIn, influence functions, TRAK.

Exact leave-one-out (``ddsem.influence.loo``) retrains N + 1 models. The estimators here train
one model on the whole set, exactly as LOO's reference model (weights all 1, batch_seed 0, the
same initial state and TrainConfig), clone its state at ``EstimatorConfig.checkpoints`` evenly
spaced steps (the last one is the final state) and estimate every (distilled i, test j) pair
from gradients. Compute only: tensors and configs in, an ``EstimateResult`` out.

Scale and sign. ddsem's influence(i, j) > 0 means image i helps test image j; ideally it is
the change in the test loss of j when i is left out, loss_j(without i) - loss_j(all). ddsem
trains on the MEAN cross-entropy of the images it keeps (plus wd/2 |theta|^2, not rescaled), so
leaving i out changes the objective by (L_mean - L_i) / (N - 1) and, to first order, the
gradient of every step by -(g_i - g_mean) / (N - 1). Hence both loss-scale estimators use the
CENTRED training gradient g_i - g_mean (the mean over the N images) and divide by N - 1:

- ``tracin`` (Pruthi et al. 2020): sum over checkpoints c of
  eta_c <grad loss_j(theta_c), g_i(theta_c) - g_mean(theta_c)> / (N - 1), with
  eta_c = lr x (steps since the previous checkpoint) / (1 - momentum), momentum's effective step.
  Per-sample gradients by torch.func (functional_call + vmap(grad)).
- ``if`` (Koh & Liang 2017; EK-FAC as in Grosse et al. 2023, via kronfluence): at the final
  state, g_j^T (H + damping)^-1 (g_i - g_mean) / (N - 1), H the Gauss-Newton (true Fisher) of the
  MEAN training cross-entropy. kronfluence's pairwise score is g_query^T H^-1 g_train with no
  minus sign: positive when up-weighting the training example lowers the query loss, i.e.
  ddsem's sign already. Its covariance and Lambda factors are divided by the number of examples
  they saw, so they estimate the per-example average (the Hessian of the mean loss): the score is
  divided by N - 1 here, not by N^2. The damping is ``EstimatorConfig.damping``; None means the
  training's weight decay when it has one (exactly the Hessian of the wd/2 |theta|^2 term), else
  kronfluence's heuristic (0.1 x the mean eigenvalue). The true Fisher samples labels from the
  model; ddsem takes that expectation exactly instead (every class of every image, weighted by
  the model's probability), so the factors carry no sampling noise. At an optimum with weight
  decay g_mean = -wd theta, so centring is the exact first-order LOO there; without weight decay
  at an optimum g_mean = 0 and it is a no-op.
  kronfluence tracks nn.Linear and nn.Conv2d only (a ConvNet's GroupNorm affine parameters are
  left out of both the gradients and the curvature).
- ``trak`` (Park et al. 2023, via traker): the checkpoints play the role of TRAK's models.
  Scores are positive for helpful training images but on the scale of TRAK's margin
  (log p / (1 - p)) with its (1 - p) out-to-loss reweighting, NOT the loss scale:
  ``details["scale"] = "trak-margin"``. With fewer images than projection dimensions X^T X is
  singular; ddsem's score computer takes X (X^T X)^+ = pinv(X)^T in float64, where traker's
  float32 inverse amplifies rounding noise.

Every estimator costs one training (``EstimateResult.trainings``). Exact LOO is not here: it is
``ddsem.influence.loo``, run in stored chunks by ``ddsem.jobs.influence``.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from ddsem.config import ESTIMATOR_PACKAGES, ESTIMATORS, EstimatorConfig, ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.influence.loo import full_float32
from ddsem.models import build_model, has_batch_statistics
from ddsem.train import State, evaluate_population, train_population

Progress = Callable[[int], None]

# The importable module of each optional package (pip name -> import name).
_MODULES = {"kronfluence": "kronfluence", "traker": "trak"}
APPROXIMATE = tuple(e for e in ESTIMATORS if e != "loo")  # the ones this module computes
TEST_CHUNK = 256  # test images per per-sample-gradient launch (TracIn)


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """TRAKer calls ``logging.basicConfig()``, which gives the root logger a stderr handler:
    every library's warnings would then print. Put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@dataclass
class EstimateResult:
    influence: np.ndarray  # (N, T) float32, on ddsem's scale and sign (module docstring)
    full_accuracy: float  # test accuracy of the model trained on the whole set
    trainings: int  # how many model trainings the estimate cost (1 for if/tracin/trak)
    details: dict[str, Any] = field(default_factory=dict)  # provenance and scale notes


def missing_package(estimator: str) -> str | None:
    """The pip package an estimator needs when it is not importable, else None."""
    package = ESTIMATOR_PACKAGES.get(estimator)
    if package is None:
        return None
    return None if importlib.util.find_spec(_MODULES[package]) is not None else package


def checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    """``checkpoints`` evenly spaced update counts in 1..steps, the last = steps (deduplicated)."""
    if steps < 1:
        raise UserError("an estimator needs a training of at least one step")
    c = max(1, min(checkpoints, steps))
    return sorted({max(1, round(k * steps / c)) for k in range(1, c + 1)})


def progress_total(
    estimator: str,
    train_cfg: TrainConfig,
    num_train: int,
    num_test: int,
    config: EstimatorConfig = EstimatorConfig(),
) -> int:
    """The total that ``progress`` counts up to: training steps plus scoring units
    (tracin: one per checkpoint; if: factors + scores; trak: featurize and score per checkpoint
    + finalize)."""
    del num_test, num_train
    if estimator not in APPROXIMATE:
        raise UserError(f"unknown estimator {estimator!r}: use {', '.join(APPROXIMATE)}")
    c = len(checkpoint_steps(train_cfg.steps, config.checkpoints))
    return train_cfg.steps + {"tracin": c, "if": 2, "trak": 2 * c + 1}[estimator]


def check_estimator(estimator: str) -> None:
    """One line for an estimator this module does not have, or whose package is missing."""
    if estimator not in APPROXIMATE:
        raise UserError(f"unknown estimator {estimator!r}: use {', '.join(APPROXIMATE)}")
    package = missing_package(estimator)
    if package is not None:
        raise UserError(
            f"--estimator {estimator} needs the Python package {package}, which is not "
            f"installed: pip install {package} (or pip install 'ddsem[estimators]')"
        )


def estimate_influence(
    estimator: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    init: State,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    config: EstimatorConfig = EstimatorConfig(),
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> EstimateResult:
    """(N, T) influence of each training image on each test image by ``estimator``."""
    check_estimator(estimator)
    device = torch.device(device)
    n = images.shape[0]
    if n < 2:
        raise UserError(f"influence needs a set of at least 2 images, this one has {n}")
    if has_batch_statistics(build_model(model_cfg)):
        raise UserError(
            f"--estimator {estimator} cannot use a model with BatchNorm ({model_cfg.arch}): "
            "per-sample gradients need per-sample outputs"
        )
    steps = checkpoint_steps(train_cfg.steps, config.checkpoints)
    with full_float32(device):
        checkpoints = _train_with_checkpoints(
            model_cfg, train_cfg, images, labels, init, steps, device, progress
        )
        final = checkpoints[-1]
        accuracy = float(
            evaluate_population(model_cfg, [final], test_x, test_y, device=device).accuracy[0]
        )
        details: dict[str, Any] = {
            "estimator": estimator,
            "checkpoint_steps": steps,
            "centred": estimator != "trak",
        }
        if estimator == "tracin":
            influence = _tracin(
                model_cfg, train_cfg, checkpoints, steps, images, labels, test_x, test_y,
                device, progress, details,
            )  # fmt: skip
        elif estimator == "if":
            influence = _influence_function(
                model_cfg, train_cfg, final, images, labels, test_x, test_y, config, device,
                progress, details,
            )  # fmt: skip
        else:
            influence = _trak(
                model_cfg, checkpoints, images, labels, test_x, test_y, config, device,
                progress, details,
            )  # fmt: skip
    return EstimateResult(
        influence=np.ascontiguousarray(influence, dtype=np.float32),
        full_accuracy=accuracy,
        trainings=1,
        details=details,
    )


def _train_with_checkpoints(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    init: State,
    steps: list[int],
    device: torch.device,
    progress: Progress | None,
) -> list[State]:
    """Train LOO's reference model once; its states after each of ``steps`` (CPU clones)."""
    wanted = set(steps)
    saved: dict[int, State] = {}

    def on_step(_model: int, step: int, state: State) -> None:
        if step in wanted:
            saved[step] = {k: v.detach().cpu().clone() for k, v in state.items()}

    final = train_population(
        model_cfg,
        images,
        labels,
        torch.ones(1, images.shape[0]),
        [init],
        train_cfg,
        device=device,
        batch_seed=0,
        progress=progress,
        on_step=on_step,
    )[0]
    saved[steps[-1]] = final
    return [saved[s] for s in steps]


# -- TracIn --------------------------------------------------------------------------------------


def _per_sample_grads(
    model: torch.nn.Module, state: State, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """(B, P) flattened per-sample gradients of the cross-entropy."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in model.named_parameters()]
    params = {n: state[n] for n in names}
    buffers = {n: v for n, v in state.items() if n not in params}

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([grads[n].reshape(x.shape[0], -1) for n in names], dim=1)


def _tracin(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    checkpoints: list[State],
    steps: list[int],
    images: torch.Tensor,
    labels: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    device: torch.device,
    progress: Progress | None,
    details: dict[str, Any],
) -> np.ndarray:
    n = images.shape[0]
    model = build_model(model_cfg).to(device).eval()
    x, y = images.to(device), labels.to(device)
    scores = torch.zeros(n, test_x.shape[0], dtype=torch.float64)
    etas = []
    previous = 0
    for state, step in zip(checkpoints, steps, strict=True):
        eta = train_cfg.lr * (step - previous) / (1.0 - train_cfg.momentum)
        previous = step
        etas.append(eta)
        st = {k: v.to(device) for k, v in state.items()}
        with torch.no_grad():
            g_train = _per_sample_grads(model, st, x, y)
            g_train = g_train - g_train.mean(0, keepdim=True)
        for s in range(0, test_x.shape[0], TEST_CHUNK):
            xt = test_x[s : s + TEST_CHUNK].to(device)
            yt = test_y[s : s + TEST_CHUNK].to(device)
            with torch.no_grad():
                g_test = _per_sample_grads(model, st, xt, yt)
                block = (g_train @ g_test.T) * (eta / (n - 1))
            scores[:, s : s + TEST_CHUNK] += block.double().cpu()
        if progress is not None:
            progress(1)
    details.update(
        scale="loss",
        step_sizes=etas,
        formula="sum_c eta_c <g_test(theta_c), g_i(theta_c) - g_mean(theta_c)> / (N - 1)",
    )
    return scores.float().numpy()


# -- influence functions (kronfluence) -----------------------------------------------------------


def _influence_function(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    final: State,
    images: torch.Tensor,
    labels: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    config: EstimatorConfig,
    device: torch.device,
    progress: Progress | None,
    details: dict[str, Any],
) -> np.ndarray:
    import kronfluence
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    class _ClassificationTask(Task):
        """Summed per-sample cross-entropy; the measurement is the test cross-entropy.

        The factors are fitted (``sample=True``) on every (image, class c) pair with the loss
        sqrt(C p_c) CE(logits, c), p_c the model's probability (a constant): the mean over the
        N x C pairs of the pseudo-gradients' outer products is then exactly the mean over the
        images of the true Fisher sum_c p_c g_c g_c^T (the Gauss-Newton of softmax
        cross-entropy), with no label-sampling noise."""

        def compute_train_loss(self, batch, model, sample=False):
            if not sample:
                x, y = batch[0], batch[1]
                return F.cross_entropy(model(x), y, reduction="sum")
            x, _, c = batch
            logits = model(x)
            with torch.no_grad():
                probs = torch.softmax(logits.detach(), dim=-1)
                weight = torch.sqrt(logits.shape[-1] * probs.gather(1, c[:, None]).squeeze(1))
            return (weight * F.cross_entropy(logits, c, reduction="none")).sum()

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    n = images.shape[0]
    damping = config.damping
    if damping is None and train_cfg.weight_decay > 0:
        damping = float(train_cfg.weight_decay)
    if config.strategy not in ("ekfac", "kfac", "diagonal", "identity"):
        raise UserError(
            f"unknown IF strategy {config.strategy!r}: use ekfac, kfac, diagonal or identity"
        )
    model = build_model(model_cfg)
    model.load_state_dict(final)
    task = _ClassificationTask()
    model = prepare_model(model.to(device), task)
    cpu = device.type != "cuda"
    x_cpu, y_cpu = images.detach().cpu(), labels.detach().cpu()
    classes = model_cfg.num_classes
    fit_set = torch.utils.data.TensorDataset(
        x_cpu.repeat_interleave(classes, dim=0),
        y_cpu.repeat_interleave(classes, dim=0),
        torch.arange(classes).repeat(n),
    )
    train_set = torch.utils.data.TensorDataset(x_cpu, y_cpu)
    query_set = torch.utils.data.TensorDataset(test_x.detach().cpu(), test_y.detach().cpu())
    quiet = [logging.getLogger(name) for name in ("kronfluence", "accelerate")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="ddsem-kronfluence-") as out,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", FutureWarning)  # its torch.cuda.amp.GradScaler
            analyzer = Analyzer(
                analysis_name="ddsem",
                model=model,
                task=task,
                cpu=cpu,
                log_level=logging.ERROR,
                disable_tqdm=True,
                output_dir=out,
            )
            factor_args = FactorArguments(strategy=config.strategy)
            analyzer.fit_all_factors(
                factors_name="factors",
                dataset=fit_set,
                per_device_batch_size=min(len(fit_set), 256),
                factor_args=factor_args,
                overwrite_output_dir=True,
            )
            if progress is not None:
                progress(1)
            analyzer.compute_pairwise_scores(
                scores_name="scores",
                factors_name="factors",
                query_dataset=query_set,
                train_dataset=train_set,
                per_device_query_batch_size=min(len(query_set), 64),
                per_device_train_batch_size=min(n, 256),
                score_args=ScoreArguments(damping_factor=damping),
                overwrite_output_dir=True,
            )
            scores = analyzer.load_pairwise_scores("scores")["all_modules"]  # (T, N)
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    if progress is not None:
        progress(1)
    s = scores.T.double().cpu()  # (N, T): g_test^T (H + damping)^-1 g_i
    influence = (s - s.mean(0, keepdim=True)) / (n - 1)
    details.update(
        package="kronfluence",
        version=getattr(kronfluence, "__version__", "unknown"),
        strategy=config.strategy,
        damping=damping if damping is not None else "kronfluence heuristic (0.1 x mean eigenvalue)",
        fisher="exact true Fisher expectation (every class weighted by p_c, no sampling)",
        scale="loss",
        formula="g_test^T (H_mean + damping)^-1 (g_i - g_mean) / (N - 1)",
    )
    return influence.float().numpy()


# -- TRAK (traker) -------------------------------------------------------------------------------


def _pinv_score_computer(base: type) -> type:
    """traker's BasicScoreComputer with X (X^T X)^+ computed as (X^+)^T in float64: with fewer
    training images than projection dimensions X^T X is singular, and traker's float32 inverse of
    it (even a pseudo-inverse of that float32 product) amplifies rounding noise (measured on the
    linear test model: Pearson with exact LOO 0.04-0.09 that way, 0.62-0.68 this way)."""

    class PinvScoreComputer(base):
        def get_x_xtx_inv(self, grads, xtx):
            del xtx  # float32 X^T X: its null space is rounding noise; X (X^T X)^+ = (X^+)^T
            return torch.linalg.pinv(grads.to(torch.float64)).T.to(self.dtype)

    return PinvScoreComputer


def _trak(
    model_cfg: ModelConfig,
    checkpoints: list[State],
    images: torch.Tensor,
    labels: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    config: EstimatorConfig,
    device: torch.device,
    progress: Progress | None,
    details: dict[str, Any],
) -> np.ndarray:
    import trak as trak_pkg
    import trak.traker as traker_module
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType
    from trak.score_computers import BasicScoreComputer

    n = images.shape[0]
    dev = "cpu" if device.type != "cuda" else str(device)
    model = build_model(model_cfg).to(device).eval()
    num_params = sum(p.numel() for p in model.parameters())
    proj_dim = max(1, min(config.proj_dim, num_params))
    use_cuda_projector = device.type == "cuda" and importlib.util.find_spec("fast_jl") is not None
    projector = None
    if not use_cuda_projector:
        projector = BasicProjector(
            grad_dim=num_params,
            proj_dim=proj_dim,
            seed=0,
            proj_type=ProjectionType.normal,
            device=dev,
            dtype=torch.float32,
        )
    batch = 64
    with (
        tempfile.TemporaryDirectory(prefix="ddsem-trak-") as out,
        mock.patch.object(traker_module, "tqdm", lambda iterable, **_: iterable),
        _root_logging_kept(),
    ):
        traker = TRAKer(
            model=model,
            task="image_classification",
            train_set_size=n,
            save_dir=out,
            load_from_save_dir=True,  # False skips creating experiments.json (traker 0.3.2)
            device=dev,
            projector=projector,
            score_computer=_pinv_score_computer(BasicScoreComputer),
            proj_dim=proj_dim,
            logging_level=logging.ERROR,
            use_half_precision=False,
            projector_seed=0,
        )
        for model_id, state in enumerate(checkpoints):
            traker.load_checkpoint({k: v.to(device) for k, v in state.items()}, model_id=model_id)
            for s in range(0, n, batch):
                xb = images[s : s + batch].to(device)
                yb = labels[s : s + batch].to(device)
                traker.featurize(batch=[xb, yb], num_samples=xb.shape[0])
            if progress is not None:
                progress(1)
        traker.finalize_features()
        for model_id, state in enumerate(checkpoints):
            traker.start_scoring_checkpoint(
                exp_name="test",
                checkpoint={k: v.to(device) for k, v in state.items()},
                model_id=model_id,
                num_targets=test_x.shape[0],
            )
            for s in range(0, test_x.shape[0], batch):
                xb = test_x[s : s + batch].to(device)
                yb = test_y[s : s + batch].to(device)
                traker.score(batch=[xb, yb], num_samples=xb.shape[0])
            if progress is not None:
                progress(1)
        scores = np.array(traker.finalize_scores(exp_name="test"), dtype=np.float32)  # (N, T)
    if progress is not None:
        progress(1)
    details.update(
        package="traker",
        version=getattr(trak_pkg, "__version__", "unknown"),
        proj_dim=proj_dim,
        projector="CudaProjector" if use_cuda_projector else "BasicProjector (normal)",
        xtx_inverse="X (X^T X)^+ = pinv(X)^T in float64",
        scale="trak-margin",
    )
    return scores
