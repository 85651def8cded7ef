"""Annotation throughput: LLaVA answers per second against batch size, measured side by side.

By default a tiny randomly initialised LLaVA (tests/tiny_llava.py) at LLaVA-1.5's real input
shape (336-pixel images, 14-pixel patches: 576 image tokens per prompt) on this machine's
device; pass ``--model llava-hf/llava-1.5-7b-hf`` (or its folder) where a GPU and the weights
are present. Prompts alternate between "Describe the object." and "Describe the background."
so every batch mixes prompt lengths (left padding at work). Also checks that every batch size
gives the answers of batch size 1, and prints the colour annotator's rate for comparison.
Wall and process CPU seconds are both printed: on a shared machine the CPU time is steadier.

    .venv/bin/python benchmarks/annotate.py --images 16 --batch-sizes 1,4,16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def images_for(count: int) -> tuple[np.ndarray, str]:
    """Real CIFAR-10 test images when DDSEM_DATA is set (class-stratified), else random pixels."""
    from ddsem.data import load_dataset, stratified_indices
    from ddsem.errors import UserError

    try:
        data = load_dataset(None)
    except UserError:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), "random pixels"
    return data.test_x[stratified_indices(data.test_y, count, seed=0)], "CIFAR-10 test images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="LLaVA hub name or folder [default: tiny]")
    parser.add_argument("--images", type=int, default=16, help="images per measurement")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny-image-size", type=int, default=336)
    parser.add_argument("--tiny-patch-size", type=int, default=14)
    parser.add_argument("--tiny-hidden", type=int, default=64)
    args = parser.parse_args()

    import torch

    from ddsem.annotate.color import ColorAnnotator
    from ddsem.annotate.llava import load_llava
    from ddsem.annotate.prompts import DEFAULT_PROMPTS, Prompt
    from ddsem.runtime import resolve_device

    device = resolve_device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    images, what = images_for(args.images)
    asked = list(DEFAULT_PROMPTS.items())
    prompts = [Prompt(*asked[k % len(asked)]) for k in range(len(images))]

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from tiny_llava import build_tiny_llava

            model = str(
                build_tiny_llava(
                    Path(tmp) / "tiny",
                    image_size=args.tiny_image_size,
                    patch_size=args.tiny_patch_size,
                    hidden=args.tiny_hidden,
                )
            )
            label = (
                f"tiny random LLaVA ({args.tiny_image_size}px, "
                f"{(args.tiny_image_size // args.tiny_patch_size) ** 2} image tokens, "
                f"hidden {args.tiny_hidden})"
            )
        else:
            model, label = args.model, args.model
        annotator = load_llava(model, device, max_new_tokens=args.max_new_tokens)
        annotator.answer(images[:2], prompts[:2])  # warm-up: lazy initialisation, kernels

        print(
            f"{label} on {device} ({annotator.dtype}), {len(images)} {what}, "
            f"max {args.max_new_tokens} new tokens, torch {torch.__version__}"
        )
        print(
            f"{'batch':>6} {'seconds':>8} {'cpu s':>7} {'answers/s':>10} {'vs batch 1':>11} "
            f"{'same answers':>13}"
        )
        baseline_rate = None
        baseline_answers = None
        for batch in batch_sizes:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            answers: list[str] = []
            for first in range(0, len(images), batch):
                answers += annotator.answer(
                    images[first : first + batch], prompts[first : first + batch]
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            rate = len(images) / seconds
            baseline_rate = baseline_rate or rate
            baseline_answers = baseline_answers or answers
            same = sum(a == b for a, b in zip(answers, baseline_answers, strict=True))
            print(
                f"{batch:>6} {seconds:>8.2f} {cpu:>7.2f} {rate:>10.2f} {rate / baseline_rate:>10.2f}x "
                f"{same:>6}/{len(answers)}"
            )

    start = time.perf_counter()
    ColorAnnotator().answer(np.resize(images, (2000, 32, 32, 3)), [Prompt("object", "")] * 2000)
    print(f"colour annotator: {2000 / (time.perf_counter() - start):.0f} answers/s on the CPU")


if __name__ == "__main__":
    main()
