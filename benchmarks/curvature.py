"""ddsem's Hessian trace and Lanczos density against PyHessian (Yao et al., 2020), side by side.

Same model (a seeded ConvNet, optionally trained a few steps), same data, same number of probes:

- trace, one batch (a distilled set's size) and several batches (the real subsample's size):
  ddsem computes each probe's v^T H v by second-order Taylor mode through the ConvNet
  (``ddsem/curvature/taylor.py``: one primal pass per block of probes, four convolutions per
  layer and probe, channels-last); PyHessian computes H v by double backward and takes v . H v
  (one batch: the gradient's graph built once; several batches: its dataloader mode rebuilds
  each batch's graph for every probe);
- Lanczos density: ``--lanczos-steps`` steps, one run, full reorthogonalisation in both; this
  needs H v itself, so ddsem uses Hessian-vector products here too (torch.func ``vjp`` of
  ``grad``, the graph built once).

"pyhessian-cl" is PyHessian with the model and data in channels-last layout, to show how much of
the difference is the memory layout alone. ``--alternatives`` adds what ddsem measured and did
not choose for the CPU: the trace from its own Hessian-vector products ("ddsem-products": the
path every non-ConvNet model takes), its CUDA default ("ddsem-batched": the block of probes
under ``vmap``, Taylor mode for the trace, products for the density) and forward-over-reverse
products ("jvp-of-grad": ``jvp`` of ``grad`` under ``vmap``, which redoes the forward and
backward pass on every call).

Values: ddsem's v^T H v and PyHessian's v . (H v) on the same probe vectors (should agree to
float precision), and the two independent trace estimates in units of their combined standard
error.

PyHessian is not a ddsem dependency: ``pip install pyhessian`` into the venv for this script.
Its 0.1 release needs two work-arounds, applied here only: (1) ``density`` calls ``torch.eig``,
removed from PyTorch; a stand-in built on ``torch.linalg.eigh`` (T is symmetric) is installed for
the run; (2) ``trace`` stops when ``abs(mean - trace) / (trace + 1e-6) < tol``, which is true
at once when the running trace is negative (no abs in the denominator); passing
``tol=-inf`` disables its stopping rule so it runs exactly ``maxIter`` probes (ddsem's estimator
is likewise run with its stopping rule off, at the same probe count).

Times are the minimum over ``--repeats`` interleaved runs, wall-clock and process CPU time:
other processes on a shared machine only ever add time, so the minimum is the steadiest.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/curvature.py          # about a minute
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/curvature.py --width 128 --probes 10 \
        --lanczos-steps 5 --repeats 1                                     # the paper's width
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from functools import partial

import numpy as np
import torch


def _install_torch_eig() -> None:
    """PyHessian 0.1's density calls torch.eig(T, eigenvectors=True): (n, 2) values, vectors."""

    def eig(matrix: torch.Tensor, eigenvectors: bool = False):
        values, vectors = torch.linalg.eigh(matrix)
        return torch.stack([values, torch.zeros_like(values)], dim=1), vectors

    torch.eig = eig


def _forward_over_reverse_operator():
    """ddsem's operator with forward-over-reverse products (``jvp`` of ``grad`` under ``vmap``,
    the primal forward and backward recomputed per call), for --forward-over-reverse."""

    from torch.func import grad, jvp, vmap

    from ddsem.curvature import HessianOperator

    class ForwardOverReverse(HessianOperator):
        def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
            single = vectors.ndim == 1
            block = vectors.reshape(1, -1) if single else vectors
            out = torch.zeros_like(block)
            for (x, y), weight in zip(self.chunks, self.chunk_weights, strict=True):
                gradient = grad(partial(self._loss, x=x, y=y))
                out += weight * vmap(lambda v, g=gradient: jvp(g, (self.point,), (v,))[1])(block)
            return out[0] if single else out

    return ForwardOverReverse


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--images", type=int, default=100, help="one-batch case (a distilled set)")
    p.add_argument("--real-images", type=int, default=400, help="several-batch case")
    p.add_argument("--batch", type=int, default=200, help="images per pass, several-batch case")
    p.add_argument("--probes", type=int, default=20)
    p.add_argument("--block", type=int, default=10, help="ddsem: probes per vmapped pass")
    p.add_argument("--lanczos-steps", type=int, default=20)
    p.add_argument("--train-steps", type=int, default=20, help="SGD steps before measuring")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--alternatives",
        action="store_true",
        help="also time ddsem's batched path and jvp-of-grad products (the CPU's rejected options)",
    )
    args = p.parse_args()

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Using backward.. with create_graph=True")
    if args.threads:
        torch.set_num_threads(args.threads)
    from pyhessian import hessian as PyHessian
    from pyhessian.utils import hessian_vector_product

    from ddsem.config import ModelConfig, TrainConfig
    from ddsem.curvature import HessianOperator, hutchinson_trace, lanczos
    from ddsem.models import build_model
    from ddsem.runtime import generator
    from ddsem.train import train_model

    _install_torch_eig()
    cfg = ModelConfig(width=args.width, depth=args.depth)
    g = torch.Generator().manual_seed(args.seed)
    total = args.images + args.real_images
    x = torch.randn(total, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (total,), generator=g)
    model = train_model(
        cfg, x, y, TrainConfig(steps=args.train_steps, batch_size=64), seed=args.seed
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    criterion = torch.nn.CrossEntropyLoss()
    small = (x[: args.images], y[: args.images])
    large = (x[args.images :], y[args.images :])
    batches = [
        (large[0][s : s + args.batch], large[1][s : s + args.batch])
        for s in range(0, args.real_images, args.batch)
    ]
    dim = sum(v.numel() for v in model.parameters())
    print(
        f"ConvNet width {args.width} depth {args.depth}: {dim} parameters; "
        f"{args.probes} probes, ddsem block {args.block}; torch threads {torch.get_num_threads()}"
    )

    def fresh_model(channels_last=False):
        m = build_model(cfg)
        m.load_state_dict(state)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m.eval()

    def layout(data, channels_last):
        if not channels_last:
            return data
        return data[0].contiguous(memory_format=torch.channels_last), data[1]

    def ours_op(images, labels, chunk, kind=HessianOperator, path="auto", taylor=True):
        op = kind(build_model(cfg), state, images, labels, chunk_size=chunk, path=path)
        if not taylor:
            op.taylor_layers = None  # the trace from Hessian-vector products
        return op

    def ours_trace(images, labels, chunk, seed, kind=HessianOperator, path="auto", taylor=True):
        return hutchinson_trace(
            ours_op(images, labels, chunk, kind, path, taylor),
            max_probes=args.probes,
            rel_err=0.0,  # never stop early: exactly --probes probes, as PyHessian below
            min_probes=args.probes,
            block=args.block,
            generator=generator(seed),
        )

    def pyh_trace(data=None, dataloader=None, channels_last=False):
        torch.manual_seed(args.seed)
        if data is not None:
            data = layout(data, channels_last)
        if dataloader is not None:
            dataloader = [layout(batch, channels_last) for batch in dataloader]
        model = fresh_model(channels_last)
        h = PyHessian(model, criterion, data=data, dataloader=dataloader, cuda=False)
        return np.asarray(h.trace(maxIter=args.probes, tol=-math.inf))

    def ours_density(kind=HessianOperator, path="auto"):
        return lanczos(
            ours_op(*small, args.images, kind, path),
            args.lanczos_steps,
            runs=1,
            generator=generator(1),
        )

    def pyh_density(channels_last=False):
        torch.manual_seed(args.seed)
        model = fresh_model(channels_last)
        h = PyHessian(model, criterion, data=layout(small, channels_last), cuda=False)
        return h.density(iter=args.lanczos_steps, n_v=1)

    # values: Hessian-vector products and v^T H v on identical vectors
    vectors = torch.randint(0, 2, (3, dim), generator=g).float() * 2 - 1
    ours_op_small = ours_op(*small, args.images)
    ours_hv = ours_op_small(vectors)
    ours_quadratic = ours_op_small.quadratic_forms(vectors)
    ref = PyHessian(fresh_model(), criterion, data=small, cuda=False)
    shapes = [q.shape for q in ref.params]
    sizes = [q.numel() for q in ref.params]
    pyh_hv = torch.stack(
        [
            torch.cat(
                [
                    h.reshape(-1)
                    for h in hessian_vector_product(
                        ref.gradsH,
                        ref.params,
                        [t.view(s) for t, s in zip(torch.split(v, sizes), shapes, strict=True)],
                    )
                ]
            )
            for v in vectors
        ]
    )
    pyh_quadratic = (pyh_hv * vectors).sum(dim=1)
    hv_err = float((ours_hv - pyh_hv).norm() / pyh_hv.norm())
    quadratic_err = float(((ours_quadratic - pyh_quadratic).abs() / pyh_quadratic.abs()).max())
    print(f"Hessian-vector products on the same 3 vectors: relative difference {hv_err:.2e}")
    print(
        f"v^T H v on the same 3 vectors (ddsem: Taylor mode; pyhessian: v . Hv): "
        f"largest relative difference {quadratic_err:.2e}"
    )

    fwd = _forward_over_reverse_operator()

    def trace_contenders(images_labels, chunk, seed, **pyhessian_input):
        ours = partial(ours_trace, *images_labels, chunk, seed)
        return {
            "ddsem": ours,
            "pyhessian": lambda: pyh_trace(**pyhessian_input),
            "pyhessian-cl": lambda: pyh_trace(**pyhessian_input, channels_last=True),
            "ddsem-products": lambda: ours(taylor=False),
            "ddsem-batched": lambda: ours(path="batched"),
            "jvp-of-grad": lambda: ours(kind=fwd, taylor=False),
        }

    cases = {
        f"trace, one batch of {args.images}": trace_contenders(small, args.images, 1, data=small),
        f"trace, {len(batches)} batches of {args.batch}": trace_contenders(
            large, args.batch, 2, dataloader=batches
        ),
        f"density, {args.lanczos_steps} Lanczos steps": {
            "ddsem": ours_density,
            "pyhessian": pyh_density,
            "pyhessian-cl": lambda: pyh_density(channels_last=True),
            "ddsem-batched": lambda: ours_density(path="batched"),
            "jvp-of-grad": lambda: ours_density(fwd),
        },
    }
    for name, contenders in cases.items():
        if not args.alternatives:
            for alternative in ("ddsem-products", "ddsem-batched", "jvp-of-grad"):
                contenders.pop(alternative, None)
        times: dict[str, list[tuple[float, float]]] = {who: [] for who in contenders}
        results = {}
        for _ in range(args.repeats):
            for who, fn in contenders.items():
                results[who], wall, cpu = _timed(fn)
                times[who].append((wall, cpu))
        med = {who: (min(w for w, _ in t), min(c for _, c in t)) for who, t in times.items()}
        print(f"\n{name}")
        for who in contenders:
            print(f"  {who:13s}  wall {med[who][0]:7.2f} s   cpu {med[who][1]:7.2f} s")
        for who in contenders:
            if who.startswith("pyhessian"):
                continue
            for reference in ("pyhessian", "pyhessian-cl"):
                print(
                    f"  ratio {reference} / {who}: wall "
                    f"{med[reference][0] / med[who][0]:.2f}x, "
                    f"cpu {med[reference][1] / med[who][1]:.2f}x"
                )
        if name.startswith("trace"):
            ours, theirs = results["ddsem"], results["pyhessian"]
            theirs_se = float(theirs.std(ddof=1) / math.sqrt(len(theirs)))
            gap = abs(ours.trace - theirs.mean()) / math.hypot(ours.stderr, theirs_se)
            print(
                f"  values: ddsem {ours.trace:.4g} ± {ours.stderr:.2g} ({ours.probes} probes), "
                f"pyhessian {theirs.mean():.4g} ± {theirs_se:.2g} ({len(theirs)} probes): "
                f"{gap:.2f} combined standard errors apart"
            )
        else:
            eig, _ = results["pyhessian"]
            theirs_nodes = np.asarray(eig[0], dtype=float)
            ours = results["ddsem"]
            print(
                f"  values: largest Ritz value ddsem {ours.top:.6g}, pyhessian "
                f"{theirs_nodes.max():.6g}; smallest ddsem {ours.bottom:.6g}, pyhessian "
                f"{theirs_nodes.min():.6g}"
            )


if __name__ == "__main__":
    main()
