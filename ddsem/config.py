"""Typed, frozen configurations for every protocol. Defaults are the analysis paper's.

Each default says where it comes from; a CPU test shrinks a config (width, steps, images),
it never takes another code path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """A classifier. ConvNet defaults: depth 3, width 128, instance norm, average pooling
    (the dataset-distillation ConvNet; its "instancenorm" is GroupNorm(C, C, affine=True))."""

    arch: str = "convnet"
    width: int = 128
    depth: int = 3
    norm: str = "instancenorm"  # instancenorm | batchnorm | none
    pooling: str = "avg"  # avg | max
    channels: int = 3
    num_classes: int = 10
    image_size: int = 32


@dataclass(frozen=True)
class TrainConfig:
    """SGD with momentum. Defaults: the paper's protocol for training on distilled data
    (lr 0.01, momentum 0.9, 300 full-batch iterations, no weight decay, no augmentation)."""

    steps: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int | None = None  # None: full batch


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a (nested) config dataclass, for provenance and run keys."""
    return asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from ``to_dict`` output, ignoring unknown keys."""
    names = {f for f in cls.__dataclass_fields__}
    return cls(**{k: v for k, v in data.items() if k in names})


__all__ = ["ModelConfig", "TrainConfig", "to_dict", "from_dict", "field"]


@dataclass(frozen=True)
class InfluenceConfig:
    """Exact leave-one-out influence (paper section 5.1). The model and training protocol are a
    ``ModelConfig`` and a ``TrainConfig`` beside it (the paper's: ConvNet-128-3, 300 steps)."""

    # distilled: the full set and the set without image i (paper 5.1, eq. of influence);
    # real: a fixed sample of real training images with and without image i added
    # (paper 5.1, "independent of other distilled images": 100 additional real images).
    context: str = "distilled"
    real_images: int = 100  # paper 5.1: "we utilize 100 additional real images"
    test_limit: int | None = None  # None: the whole test split (paper: all 10,000 CIFAR-10 tests)
    selection_seed: int = 0  # picks the real-context images (the test subset always uses seed 0)
    top_k: int = 100  # most influenced test images kept per distilled image for plain SQL


# Influence estimators (issue 20): exact LOO retrains N + 1 models; the others train one.
ESTIMATORS = ("loo", "if", "tracin", "trak")
# The optional Python package each approximate estimator needs (pip install NAME).
ESTIMATOR_PACKAGES = {"if": "kronfluence", "trak": "traker"}


@dataclass(frozen=True)
class EstimatorConfig:
    """Approximate influence from ONE training (ddsem.influence.estimators). Sources: TracIn,
    Pruthi et al. 2020 ("Estimating training data influence by tracing gradient descent":
    gradient dot products summed over a few checkpoints of the run); influence functions,
    Koh & Liang 2017 with EK-FAC curvature as in Grosse et al. 2023 (kronfluence); TRAK, Park
    et al. 2023 ("TRAK: attributing model behavior at scale"; traker)."""

    checkpoints: int = 10  # TracIn/TRAK: evenly spaced along the training, the last = the final
    #   state (Pruthi et al. 2020 use a few checkpoints)
    damping: float | None = None  # IF: kronfluence's damping; None = the weight decay when the
    #   training has one (the Hessian of its wd/2 |theta|^2 term), else kronfluence's heuristic
    #   (0.1 x the mean eigenvalue)
    strategy: str = "ekfac"  # IF: kronfluence factor strategy (ekfac | kfac | diagonal | identity)
    proj_dim: int = 2048  # TRAK: projection dimension (Park et al. 2023 / traker default 2048)


# -- distillation (ddsem distill / ddsem evaluate) -----------------------------------------------

# Differentiable siamese augmentation families (DSA, Zhao & Bilen 2021: --dsa_strategy default).
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DMConfig:
    """Distribution matching (Zhao & Bilen, WACV 2023). Defaults: main_DM.py of
    VICO-UoE/DatasetCondensation, CIFAR-10."""

    iterations: int = 20_000  # --Iteration 20000
    lr_img: float = 1.0  # --lr_img 1.0
    momentum_img: float = 0.5  # SGD([image_syn], lr_img, momentum=0.5)
    batch_real: int = 256  # --batch_real 256: real images per class per iteration
    dsa_strategy: str = DSA_STRATEGY  # --dsa_strategy, same parameters for real and synthetic


@dataclass(frozen=True)
class GMConfig:
    """Gradient matching, DC (Zhao, Mopuri & Bilen, ICLR 2021). Defaults: main.py and
    utils.get_loops of VICO-UoE/DatasetCondensation, CIFAR-10, as the code stood for the ICLR
    2021 paper (its 44.9% at ipc 10: `python main.py --dataset CIFAR10 --model ConvNet --ipc 10`).

    Which settings produced the GM set the analysis paper studied is unknown: the paper used
    "the distilled data provided by the authors" (section 2) and does not say how it was made.
    Two of DC's own settings changed over time:
    - inner-network momentum: 0.5 from the first commit (f971a6b, 2021-01-15) until commit
      e9d935b "DSA" (2021-07-02), 0 (plain SGD) since; ddsem keeps 0.5, the code of the paper
      whose 44.9% is quoted (pass momentum_net=0 for the current code);
    - initialisation: main.py's --init default is "noise" since 2326d16 (2021-01-17; the first
      version: "results in the paper were obtained with --init 'random'"), so the published
      44.9% starts from noise, while `ddsem distill` starts every method from real images by
      default (the analysis paper's choice for BPTT, appendix F): pass --init noise to match DC.
    DC evaluates its CIFAR-10 ConvNet sets with the `dc` protocol (DCEvalConfig: get_daparam
    gives no augmentation there, so epoch_eval_train stays 300), not DSA's 1000 epochs."""

    iterations: int = 1000  # --Iteration 1000
    lr_img: float = 0.1  # --lr_img 0.1
    momentum_img: float = 0.5  # SGD([image_syn], lr_img, momentum=0.5)
    lr_net: float = 0.01  # --lr_net 0.01: inner training of the network on synthetic data
    momentum_net: float = 0.5  # DC 2021 main.py: SGD(net.parameters(), lr_net, momentum=0.5)
    batch_real: int = 256  # --batch_real 256: real images per class per matching step
    batch_train: int = 256  # --batch_train 256: minibatch of the inner network training
    outer_loop: int | None = None  # None: by ipc, GM_LOOPS (get_loops)
    inner_loop: int | None = None  # None: by ipc, GM_LOOPS (get_loops)
    dsa_strategy: str = "none"  # DC matches without augmentation (DSA is the later variant)


# utils.get_loops: ipc -> (outer_loop, inner_loop). Other ipc take the entry at or below.
GM_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}


@dataclass(frozen=True)
class TMConfig:
    """Trajectory matching, MTT (Cazenavette et al., CVPR 2022). Fields left None take the
    per-ipc CIFAR-10 values of TM_TABLE; the rest are distill.py defaults."""

    iterations: int = 5000  # distill.py --Iteration 5000
    syn_steps: int | None = None  # N: student steps on synthetic data
    expert_epochs: int | None = None  # M: the target is the expert M epochs after the start
    max_start_epoch: int | None = None  # T+: start epochs are drawn from [0, T+)
    lr_img: float | None = None
    lr_lr: float | None = None  # learning rate of the learnable synthetic learning rate
    lr_syn_init: float | None = None  # --lr_teacher: the synthetic learning rate's start value
    # The learned learning rate ends up with the set (synthetic_lr) and is the lr the `dsa`
    # evaluation protocol trains with, as MTT's distill.py does (args.lr_net = syn_lr.item()).
    momentum: float = 0.5  # SGD momentum of the image and learning-rate optimisers
    batch_syn: int | None = None  # None: every synthetic image in each student step
    dsa_strategy: str = DSA_STRATEGY  # per-sample DSA on the student's batches


# MTT paper, CIFAR-10 hyper-parameter table (ConvNetD3): ipc -> settings. The paper distils
# ipc 1 and 10 on ZCA-whitened images (pixel lr 100) and ipc 50 without ZCA (pixel lr 1000);
# TM_ZCA below says which, and ddsem's TM follows it on CIFAR-10 (`--zca/--no-zca` overrides;
# ddsem.data.zca: kornia's ZCAWhitening(eps=0.1) fitted on the [0, 1] training pixels, as MTT's
# utils.py). lr_img here is the no-ZCA value; a ZCA run takes TM_ZCA's. MTT's README has no
# CIFAR-10 command (its one distill command is CIFAR-100 ipc 1 with --zca). Other ipc take the
# entry at or below.
TM_TABLE: dict[int, dict[str, float]] = {
    1: {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_img": 1000.0,
        "lr_lr": 1e-7, "lr_syn_init": 0.01},
    10: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "lr_img": 1000.0,
         "lr_lr": 1e-5, "lr_syn_init": 0.01},  # --lr_teacher=0.01, as in the MTT README's
    # one CIFAR command, which is CIFAR-100 ipc 1 (the README gives no CIFAR-10 command)
    50: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 40, "lr_img": 1000.0,
         "lr_lr": 1e-5, "lr_syn_init": 0.001},
}  # fmt: skip
# ipc -> (ZCA on CIFAR-10, lr_img with ZCA): the MTT paper's table ("ZCA" column: yes at ipc 1
# and 10, no at 50). On CIFAR-100 and others ddsem's default is no ZCA (`--zca` turns it on).
TM_ZCA: dict[int, tuple[bool, float]] = {1: (True, 100.0), 10: (True, 100.0), 50: (False, 1000.0)}


@dataclass(frozen=True)
class ExpertConfig:
    """Expert trajectories for TM: models trained on real data, parameters kept after every
    epoch. Defaults: MTT buffer.py (its --decay is off by default, so no lr decay). With --zca
    (ddsem's default on CIFAR-10, for the ZCA TM runs of TM_ZCA; MTT's README trains its
    CIFAR-100 experts with --zca) they learn ZCA-whitened images, and their pool key records
    the transform, so TM never draws ZCA experts for a normalised run or the reverse."""

    num_experts: int = 100  # --num_experts 100
    epochs: int = 50  # --train_epochs 50
    lr: float = 0.01  # --lr_teacher 0.01
    momentum: float = 0.0  # SGD(momentum=0)
    weight_decay: float = 0.0  # SGD(weight_decay=0)
    batch_size: int = 256  # --batch_train 256
    dsa_strategy: str = DSA_STRATEGY  # buffer.py trains with DSA (per-sample parameters)


@dataclass(frozen=True)
class BPTTConfig:
    """Back-propagation through the whole unrolled inner training (Deng & Russakovsky, NeurIPS
    2022). Outer optimiser and clipping: RememberThePast's configs/compressors_bptt_interventions
    .yml (compressor_optim SGD lr 0.1 momentum 0.5) and runners/sgld_runner_standard.py
    (clip_grad_norm_ max_norm=2).

    The analysis paper reproduced its BPTT set (58% retrained, section 3) from real-image
    initialisation (appendix F) but states neither the inner steps nor the outer iterations.
    The only published command (RememberThePast README, "BPTT without memory addressing":
    `bptt_efficient_compressor_minibatch.sh debug ConvNet compressors_bptt_interventions.yml
    1 150 SGD 0.9 CIFAR10 10 10 1 1 none 0`) is ipc 1, 150 inner steps, inner SGD momentum 0.9,
    all 10 classes per task, 10 synthetic images per class per inner step (at ipc <= 10: every
    image, i.e. full batch), ZCA on (ddsem's BPTT has none), and n_iters 500,000 outer
    iterations (the yml); its evaluation (tools/trainer.py) is 300 epochs of batch 640 at
    lr 0.01 momentum 0.9 without schedule, i.e. the `paper` protocol at ipc 10. ddsem's
    defaults are therefore its own choices where the paper is silent (below)."""

    iterations: int = 5000  # ours: a budget (RememberThePast: 500,000); unknown for the paper
    # ours: the analysis paper's retraining length (300 full-batch steps, section 2), so the
    # unrolled inner training is the one the set is evaluated with; the README runs 150
    inner_steps: int = 300
    inner_lr: float = 0.01  # RememberThePast bptt_optim lr 0.01 (= the paper's section 2)
    inner_momentum: float = 0.9  # the README command's inner_momentum 0.9
    lr_img: float = 0.1
    momentum_img: float = 0.5
    grad_clip: float = 2.0
    batch_real: int = 64  # real images per class in the outer loss (their n_queries=64)


@dataclass(frozen=True)
class DCEvalConfig:
    """The `dc` evaluation of a distilled set: utils.evaluate_synset of DatasetCondensation as
    main.py --method DC runs it for a CIFAR-10 ConvNet: 300 epochs (epoch_eval_train 300, as
    get_daparam gives no augmentation there), batch 256, SGD lr 0.01 momentum 0.9 weight decay
    5e-4; the loop runs epochs 0..epochs and after epoch epochs//2 + 1 divides the lr by 10
    with a fresh optimiser (momentum restarts). No augmentation."""

    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_factor: float = 0.1


@dataclass(frozen=True)
class DSAEvalConfig(DCEvalConfig):
    """The `dsa` evaluation: evaluate_synset as DSA (main.py --method DSA), DM (main_DM.py) and
    MTT (distill.py) run it, the protocol behind DM's 48.9% and MTT's 65.3%: the `dc` schedule
    over 1000 epochs (epoch_eval_train 1000), and DiffAugment on every training batch (epoch(...,
    aug=True): one family of the strategy drawn per batch, ParamDiffAug's aug_mode 'S', and
    per-sample parameters, seed=-1). MTT trains with the set's learned learning rate
    (args.lr_net = syn_lr.item()); ddsem does so for any set that carries one."""

    epochs: int = 1000  # DSA/DM/MTT: epoch_eval_train 1000
    dsa_strategy: str = DSA_STRATEGY  # --dsa_strategy color_crop_cutout_flip_scale_rotate
    learned_lr: bool = True  # MTT: the set's synthetic learning rate replaces lr when it has one


# -- annotation and the attribute vocabulary (ddsem annotate / ddsem attributes) -----------------


@dataclass(frozen=True)
class AnnotateConfig:
    """Annotation of real images (paper section 5.2: LLaVA asked "describe the object" and
    "describe the background" about every test image)."""

    annotator: str = "color"  # color: offline, any CPU; llava: the paper's annotator (a GPU)
    model: str = "llava-hf/llava-1.5-7b-hf"  # LLaVA-1.5 (Liu et al., 2023b), as in the paper
    max_new_tokens: int = 96  # not stated in the paper: room for a few sentences
    llava_batch_size: int = 16  # ours: fits a 7B model in fp16 on one 24 GB GPU
    color_batch_size: int = 1000  # ours: pixels only, a batch is one database transaction
    split: str = "test"  # the paper annotates the real test images


@dataclass(frozen=True)
class AttributeConfig:
    """Candidate attributes from the responses (the paper compiled recurring attributes by hand;
    this is the automatic first pass: unigrams and bigrams without English stop words)."""

    min_df: int = 5  # ours: a term must occur in this many responses of its prompt kind
    max_terms: int = 100  # ours: the most frequent terms kept per prompt kind
    ngram_max: int = 2  # unigrams and bigrams ("yellow", "blue sky")


@dataclass(frozen=True)
class SignificanceConfig:
    """Whether an AP is better than chance (ddsem.significance). The paper reports no test;
    these are ddsem's choices, stated wherever an answer is shown."""

    alpha: float = 0.05  # Benjamini-Hochberg false discovery rate for "significant"
    min_draws: int = 1000  # null draws per (test images, positives) to start with
    # Drawn deeper (x10) where an answer is unresolved and could still be significant, up to
    # this many: the smallest p-value is 1 / (max_draws + 1) ~ 1e-4, so 18 or more answers at
    # that floor survive BH over the ~9,000 scores of the demo's 20 images. Deeper nulls cost
    # more than ranking itself (benchmarks/rank.py); raise it with --draws.
    max_draws: int = 10_000
    seed: int = 0  # the null draws' seed (with T and P: the same null for every query)


# -- curvature and loss landscape (ddsem curvature / ddsem landscape) ----------------------------


@dataclass(frozen=True)
class CurvatureConfig:
    """Hessian of the loss on each data source at checkpoints of a model trained on real data
    (paper section 4.3 and appendix A). The number of iterations and the checkpoint spacing are
    per command: checkpoints of one run all lie on the same deterministic trajectory."""

    batch_size: int = 256  # paper 4.3: the model is trained on real data with batch 256
    lr: float = 0.01  # paper 4.3: SGD lr 0.01
    momentum: float = 0.9  # paper 4.3: momentum 0.9
    probes: int = 100  # issue 8 (--probes 100); PyHessian's trace(maxIter=100)
    rel_err: float = 0.05  # issue 8: stop once the standard error is 5% of |trace|
    min_probes: int = 10  # ours: a standard error from fewer probes is too noisy to stop on
    probe_block: int = 10  # ours: probes sharing one primal pass (speed vs memory, same estimator)
    chunk_size: int = 256  # ours: images per pass (memory: ~45 MB an image, width 128, 10 probes)
    real_samples: int = 5000  # ours: the real source is a uniform random subsample (unbiased)
    lanczos_steps: int = 100  # issue 8 (--lanczos-steps 100); PyHessian's density(iter=100)
    lanczos_runs: int = 1  # PyHessian's density(n_v=1)

    def train_config(self, iterations: int) -> TrainConfig:
        return TrainConfig(
            steps=iterations, lr=self.lr, momentum=self.momentum, batch_size=self.batch_size
        )


@dataclass(frozen=True)
class LandscapeConfig:
    """Appendix A's loss plane through the initial weights, the weights after one epoch on real
    data and the weights after training on the distilled set (same initialisation)."""

    grid: int = 21  # issue 8 (--grid 21): points per axis
    margin: float = 0.25  # ours: room around the three points, as a fraction of each axis' span
    real_epochs: int = 1  # appendix A: one epoch on real data
    batch_size: int = 256  # as the curvature training (paper 4.3)
    lr: float = 0.01  # paper 4.3
    momentum: float = 0.9  # paper 4.3
    distilled_steps: int = 300  # paper section 2: 300 full-batch iterations on distilled data
    distilled_lr: float = 0.01  # paper section 2: SGD lr 0.01, momentum 0.9
    test_samples: int | None = None  # None: the whole test split (10,000 for CIFAR-10)
    trajectory_points: int = 30  # ours: checkpoints of each training drawn on the plane


# -- the paper's other analyses (ddsem analyze) --------------------------------------------------
# Facts from the paper and its code (princetonvisualai/What-is-Dataset-Distillation-Learning:
# experiment_code/early_training_analysis/recognition.ipynb, replacement_analysis/*.ipynb).


@dataclass(frozen=True)
class RecognitionConfig:
    """Section 4.2, Fig. 5: a ConvNet trained on real data; after every iteration, its accuracy
    on the real test set and on each distilled set (recognition.ipynb: batch 256, SGD lr 0.01,
    momentum 0.9, 2 epochs, accuracy after every step)."""

    epochs: int = 2  # recognition.ipynb: `for _ in range(2)` over the training loader
    batch_size: int = 256  # recognition.ipynb: DataLoader(batch_size=256, shuffle=True)
    lr: float = 0.01  # recognition.ipynb: SGD(lr=0.01, momentum=0.9)
    momentum: float = 0.9
    every: int = 1  # recognition.ipynb: accuracy after every iteration
    plot_iterations: int = 300  # recognition.ipynb plots test_acc[:300]
    tolerance: float = 0.05  # ours: "within a few points" of the final accuracy (5 points)
    seeds: int = 3  # ours: the band over initialisations (the notebook ran one)


@dataclass(frozen=True)
class RealModelSpec:
    """A model trained on real data for the inverse analysis (pretrained_visualization.ipynb:
    ConvNet width 16 for 20 epochs, ConvNet width 128 for 40 epochs, batch 256, SGD lr 0.01
    momentum 0.9; the paper's ResNet-18 was loaded pretrained, ddsem trains it the same way)."""

    arch: str
    width: int
    epochs: int

    @property
    def label(self) -> str:
        """ "convnet-16", "resnet18bn" (the reference width 128), "resnet18bn-32"."""
        if self.arch != "convnet" and self.width == 128:
            return self.arch
        return f"{self.arch}-{self.width}"


@dataclass(frozen=True)
class InverseConfig:
    """Fig. 2 (left and right): real-data models classify distilled images; penultimate
    features of distilled and real test images embedded in 2-D (UMAP, n_neighbors=5,
    random_state=42 in pretrained_visualization.ipynb)."""

    models: tuple[RealModelSpec, ...] = (
        RealModelSpec("convnet", 16, 20),  # paper Fig. 2: 68.4% test accuracy
        RealModelSpec("convnet", 128, 40),  # paper Fig. 2: 80.9%
        RealModelSpec("resnet18bn", 128, 40),  # paper Fig. 2: 90.8% (a pretrained ResNet-18)
    )
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    umap_neighbors: int = 5  # pretrained_visualization.ipynb: umap.UMAP(n_neighbors=5)
    embed_seed: int = 42  # pretrained_visualization.ipynb: random_state=42
    embed_test: int | None = None  # None: every test image (the notebook embeds all 10,000)


# The paper's Fig. 2 test accuracies of its three real-data models, shown beside ddsem's own.
PAPER_TEST_ACCURACY: dict[tuple[str, int], float] = {
    ("convnet", 16): 0.684,
    ("convnet", 128): 0.809,
    ("resnet18bn", 128): 0.908,  # a pretrained torchvision ResNet-18 in the paper's notebook
}


@dataclass(frozen=True)
class ClippingConfig:
    """Section 3, Fig. 3 left: distilled pixels un-normalised to [0, 1] against real ones, and
    the set retrained as stored vs clipped to [0, 1] (paper: BPTT 58% -> 44%) with the
    distilled-data protocol (TrainConfig: 300 full-batch steps, lr 0.01, momentum 0.9)."""

    bins: int = 100  # ours: histogram bins over the shown range
    value_range: tuple[float, float] = (-1.0, 2.0)  # ours: wide enough for BPTT's outliers
    runs: int = 5  # ours: retrained models per variant (seeds)


@dataclass(frozen=True)
class ExtraTrainingConfig:
    """Appendix E: a ConvNet trained on real data for 300 iterations (batch 256, SGD lr 0.01,
    momentum 0.9), then trained further on each distilled set with the distilled-data protocol
    (300 full-batch steps); test accuracy before and after (paper: BPTT and TM change little,
    DM and GM lose 5-7 points)."""

    real_iterations: int = 300  # appendix E: 300 iterations on real data
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    runs: int = 3  # ours: seeds (initialisation and minibatch order of the real training)


@dataclass(frozen=True)
class AgreementConfig:
    """The agreement analysis. Sources: experiment_code/agreement_analysis/generate_models.py
    (g), compare_models.ipynb (n), the paper's section 4.1 (p) and appendices B, C (B, C).
    """

    pool: int = 520  # g: `for model_id in range(520)`; p 4.1: "a pool of 520 models"
    fraction_low: float = 0.005  # g: np.random.uniform(0.005, 0.05) per model
    fraction_high: float = 0.05  # g (the same fraction for every class: list[:int(len*f)])
    epochs: int = 100  # g: `for _ in range(100)`; p 4.1: "training the model for 100 epochs"
    batch_size: int = 256  # g: DataLoader(batch_size=256, shuffle=True)
    lr: float = 0.01  # g: SGD(lr=0.01, momentum=0.9), no weight decay
    momentum: float = 0.9  # g
    early_runs: int = 30  # g: `for model_id in range(30)`, one pass over the loader each
    early_epochs: int = 1  # g: one epoch, predictions saved after every iteration
    weight_decay_pool: int = 300  # B: "We train 300 models with weight decay"
    weight_decay_low: float = 0.05  # B: "strength is randomly selected 0.05 and 0.13"
    weight_decay_high: float = 0.13  # B
    weight_decay_epochs: int = 20  # B: "trained for 20 epochs to convergence"
    window: float = 1.0  # points of test accuracy; n: models whose rounded accuracy is the
    #   distilled model's int(100 a) or +1 (p 4.1: "only ... models with similar test accuracy")
    distilled_seeds: int = 3  # ours (n trains one model per set): a spread over seeds
    chunk: int = 64  # ours: models per stored chunk of the subset and weight-decay pools
    alpha: float = 0.05  # ours: the level of the normality check and of "improbable" (C)


@dataclass(frozen=True)
class MixingConfig:
    """Fig. 3 right (experiment_code/replacement_analysis/training_sensitivity.ipynb). The
    training is the distilled-data protocol, ``TrainConfig()``: the notebook trains a ConvNet
    for ``range(300)`` full-batch steps with ``SGD(lr=0.01, momentum=0.9)``, cross-entropy, on
    the set and the real images stacked."""

    counts: tuple[int, ...] = (0, 2, 10, 50, 250)  # notebook: `for ipc in [0, 2, 10, 50, 250]`
    runs: int = 5  # ours: seeds per point (the notebook trained one, torch.manual_seed(1))
    # The notebook's baseline is 10 random real images per class (seed(9999); `list[:10]`) plus
    # the same extra images: ddsem takes as many per class as the distilled set has.
