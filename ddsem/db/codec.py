"""The one tensor <-> blob codec: NumPy's .npy format (dtype, shape, raw bytes; no pickle)."""

from __future__ import annotations

import io

import numpy as np


def to_blob(array) -> bytes:
    """Array or tensor -> bytes, bit-exact (dtype and shape kept)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def from_blob(blob: bytes) -> np.ndarray:
    """Bytes written by ``to_blob`` -> the same array."""
    return np.load(io.BytesIO(blob), allow_pickle=False)


def png_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    """An HxWx3 image (uint8, or float in [0, 1] clipped for display only) -> PNG bytes."""
    from PIL import Image

    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def png_to_array(blob: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def state_to_blob(state: dict) -> bytes:
    """A model state dict (name -> tensor) -> bytes (.npz, no pickle), bit-exact."""
    arrays = {
        k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
        for k, v in state.items()
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def state_from_blob(blob: bytes) -> dict[str, np.ndarray]:
    """Bytes from ``state_to_blob`` -> name -> array (wrap with torch.from_numpy to load)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-ready config, to tell "same job" from "different job"."""
    import hashlib
    import json

    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
