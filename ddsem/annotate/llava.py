"""LLaVA as an annotator: batched, greedy answers to "describe the object/background".

``load_llava`` opens a hub name or a local folder (offline when there is no network) with
transformers' ``LlavaForConditionalGeneration`` and its processor; ``LlavaAnnotator.answer``
runs one batch: left padding (so every prompt ends where generation starts), greedy decoding,
only the new tokens decoded. Half precision on CUDA, float32 on the CPU.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ddsem.annotate.prompts import Prompt
from ddsem.config import AnnotateConfig
from ddsem.errors import UserError

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = AnnotateConfig.model
DEFAULT_MAX_NEW_TOKENS = AnnotateConfig.max_new_tokens
# LLaVA-1.5's conversation format, used when the processor carries no chat template.
LLAVA15_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


@dataclass
class LlavaAnnotator:
    """A loaded LLaVA model and processor, ready to answer batches."""

    net: Any  # LlavaForConditionalGeneration
    processor: Any  # LlavaProcessor
    device: torch.device
    dtype: torch.dtype
    model: str  # what Annotation.model records: the hub name or the folder's absolute path
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    name: str = "llava"

    def prompt_text(self, prompt: str) -> str:
        """The full model input for one question, in the model's own conversation format."""
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
            ]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return LLAVA15_TEMPLATE.format(prompt=prompt)

    def answer(self, images: np.ndarray, prompts: list[Prompt]) -> list[str]:
        """Answer ``prompts[i]`` about ``images[i]`` (uint8 B x H x W x 3), in one batch."""
        import torch
        from PIL import Image

        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        if not len(prompts):
            return []
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"
        inputs = self.processor(
            images=[Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images],
            text=[self.prompt_text(p.text) for p in prompts],
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.net.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]


def _local_folder(model: str) -> Path | None:
    """The folder ``model`` names, or None for a hub name ("org/name"); a missing path is an error."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                f"--model {model}: not a folder (give a LLaVA model folder or a hub name)"
            )
        return path.resolve()
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model:
        raise UserError(f"model folder does not exist: {path}")
    return None


def model_key(model: str) -> str:
    """What ``Annotation.model`` records for ``--model``: a folder's absolute path or the hub
    name, so a re-run from another directory still finds its finished answers."""
    folder = _local_folder(model)
    return str(folder) if folder is not None else model


def _check_llava_folder(folder: Path) -> None:
    """Refuse, before loading anything, a folder that holds no model or another kind of model."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(
            f"{folder} is not a Hugging Face model folder (no config.json); --model needs a LLaVA "
            f"model such as {DEFAULT_MODEL} or a folder it was downloaded to"
        )
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file} is not readable JSON: {e}") from e
    if model_type != "llava":
        raise UserError(
            f"{folder} holds a {model_type!r} model, not LLaVA (model_type 'llava', e.g. "
            f"{DEFAULT_MODEL})"
        )


def network_reachable(timeout: float = 3.0) -> bool:
    """Can we reach the Hugging Face hub? False in offline mode or without a connection."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text.splitlines()[0]}" if text else e.__class__.__name__


def _load(
    source: str, local_only: bool, dtype: torch.dtype, device: torch.device
) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    if config.model_type != "llava":
        raise UserError(
            f"{source} is a {config.model_type!r} model, not LLaVA (e.g. {DEFAULT_MODEL})"
        )
    processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
    net = LlavaForConditionalGeneration.from_pretrained(
        source,
        dtype=dtype,
        local_files_only=local_only,
        # Straight onto the GPU: a 7B model need not pass through host memory first.
        device_map={"": str(device)} if device.type == "cuda" else None,
    )
    return net, processor


def load_llava(
    model: str,
    device: torch.device,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    online: bool | None = None,
) -> LlavaAnnotator:
    """Load a LLaVA model by hub name or folder; fp16 on CUDA. ``online`` None: probe the hub.

    A folder is read with ``local_files_only``. A hub name comes from the local Hugging Face
    cache, or is downloaded when the hub answers. Any failure is one UserError that says what
    was tried and how to point at a local copy.
    """
    import torch
    from huggingface_hub import constants
    from transformers.utils import logging as hf_logging

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    folder = _local_folder(model)
    source = str(folder) if folder is not None else model
    if folder is not None:
        _check_llava_folder(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no retry chatter: a failure is reported in one line
    try:
        if folder is not None:
            try:
                net, processor = _load(source, True, dtype, device)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - every loading failure becomes one line
                raise UserError(
                    f"cannot load LLaVA model from {folder} ({_first_line(e)}); it must be a "
                    f"complete copy of a LLaVA model folder such as {DEFAULT_MODEL}"
                ) from e
        else:
            net, processor = None, None
            try:
                net, processor = _load(source, True, dtype, device)
            except UserError:
                raise
            except Exception:  # noqa: BLE001 - not in the cache: try the hub below
                tried = [f"the Hugging Face cache {constants.HF_HUB_CACHE}: not there"]
            if net is None and (online is False or (online is None and not network_reachable())):
                tried.append("a download: no network")
            elif net is None:
                try:
                    net, processor = _load(source, False, dtype, device)
                except UserError:
                    raise
                except Exception as e:  # noqa: BLE001
                    tried.append(f"a download: {_first_line(e)}")
            if net is None:
                raise UserError(
                    f"cannot load LLaVA model {model!r} (tried {'; '.join(tried)}); on a machine "
                    f"with a network run `hf download {model} --local-dir DIR`, copy DIR here "
                    "and pass --model DIR"
                )
    finally:
        hf_logging.set_verbosity(verbosity)

    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    net.to(device).eval()
    return LlavaAnnotator(
        net=net,
        processor=processor,
        device=device,
        dtype=dtype,
        model=source,
        max_new_tokens=max_new_tokens,
    )
