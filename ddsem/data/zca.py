"""ZCA whitening as DC and MTT use it: kornia's ``ZCAWhitening`` fitted on the training split.

MTT (utils.py ``get_dataset`` with ``--zca``) loads CIFAR with ``transforms.ToTensor()`` only,
so the transform is fitted on pixels in [0, 1], NOT on the normalised images, with
``K.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` over every training image (N x 3072,
unbiased covariance); the test images get the same transform. ddsem's images live in the
normalised space (``ddsem.data.normalize``), so this transform is composed with it:

    forward(x)  = ((x * STD + MEAN).flatten() - mean) @ transform          normalised -> ZCA
    inverse(z)  = ((z + mean @ transform) @ inverse - MEAN) / STD           ZCA -> normalised

which is kornia's ``forward`` / ``inverse_transform`` on the [0, 1] pixels. The fitted mean,
transform and inverse are numpy float32 arrays (``arrays()``), so they are stored as ``.npy``
blobs and never pickled; ``to_kornia()`` rebuilds the fitted kornia module from them.

With eps = 0.1 on [0, 1] pixels the whitened covariance is U S/(S + eps) U^T, not the identity:
most of CIFAR's eigenvalues are far below 0.1, so eps shrinks them (a strong regulariser, as MTT
meant). It is the identity only where eps is small against every eigenvalue.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.data.cifar import MEAN, STD

if TYPE_CHECKING:
    import torch

EPS = 0.1  # MTT utils.py get_dataset: K.enhance.ZCAWhitening(eps=0.1, compute_inv=True)
FITTED_ON = "train split, pixels in [0, 1] (torchvision ToTensor, no Normalize), as MTT's --zca"


def fingerprint(pixels: np.ndarray) -> str:
    """What a transform was fitted on: a hash of the training pixels (uint8 NHWC) and shape."""
    h = hashlib.sha256(repr((pixels.shape, str(pixels.dtype))).encode())
    h.update(np.ascontiguousarray(pixels).data)
    return h.hexdigest()[:16]


def _channel(values: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(1, 3, 1, 1) * np.ones((1, *shape), np.float32)


class ZCA:
    """A fitted ZCA transform between ddsem's normalised space and MTT's ZCA space."""

    def __init__(
        self,
        mean: np.ndarray,
        transform: np.ndarray,
        inverse: np.ndarray,
        eps: float,
        shape: tuple[int, int, int] = (3, 32, 32),
    ) -> None:
        d = int(np.prod(shape))
        self.mean = np.ascontiguousarray(mean, np.float32).reshape(1, d)
        self.transform = np.ascontiguousarray(transform, np.float32).reshape(d, d)
        self.inverse = np.ascontiguousarray(inverse, np.float32).reshape(d, d)
        self.eps = float(eps)
        self.shape = tuple(int(s) for s in shape)
        self._cache: dict[str, tuple[Any, ...]] = {}

    # -- storage ---------------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (kornia's mean_vector, transform_matrix,
        transform_inv), for ``.npy`` blobs."""
        return {"mean": self.mean, "transform": self.transform, "inverse": self.inverse}

    @classmethod
    def from_kornia(cls, module: Any, shape: tuple[int, int, int]) -> ZCA:
        return cls(
            module.mean_vector.detach().cpu().numpy(),
            module.transform_matrix.detach().cpu().numpy(),
            module.transform_inv.detach().cpu().numpy(),
            module.eps,
            shape,
        )

    def to_kornia(self) -> Any:
        """A fitted ``kornia.enhance.ZCAWhitening`` holding exactly the stored arrays."""
        import kornia as K
        import torch

        module = K.enhance.ZCAWhitening(eps=self.eps, compute_inv=True)
        module.mean_vector = torch.from_numpy(self.mean.copy())
        module.transform_matrix = torch.from_numpy(self.transform.copy())
        module.transform_inv = torch.from_numpy(self.inverse.copy())
        module.fitted = True
        return module

    # -- the transform (torch) -------------------------------------------------------------------

    def _tensors(self, device: Any, dtype: Any) -> tuple[Any, ...]:
        import torch

        key = f"{device}:{dtype}"
        if key not in self._cache:
            to = {"device": device, "dtype": dtype}
            t = torch.from_numpy(self.transform).to(**to)
            m = torch.from_numpy(self.mean).to(**to)
            self._cache[key] = (
                m,
                t,
                torch.from_numpy(self.inverse).to(**to),
                torch.tensor(MEAN, **to).view(1, 3, 1, 1),
                torch.tensor(STD, **to).view(1, 3, 1, 1),
                m @ t,  # kornia's inverse_transform: linear_transform(x, T_inv, -mean @ T)
            )
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised N x C x H x W -> ZCA space (differentiable; no grad through the fit)."""
        m, t, _, mu, sd, _ = self._tensors(x.device, x.dtype)
        pixels = x * sd + mu
        return ((pixels.reshape(len(x), -1) - m) @ t).reshape(x.shape)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """ZCA space -> normalised (MTT's images_zca_*.pt are this before the normalisation)."""
        _, _, inv, mu, sd, mt = self._tensors(z.device, z.dtype)
        pixels = ((z.reshape(len(z), -1) + mt) @ inv).reshape(z.shape)
        return (pixels - mu) / sd

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        """ZCA space -> [0, 1] pixels (unclipped): what MTT writes as images_zca_*.pt."""
        _, _, inv, _, _, mt = self._tensors(z.device, z.dtype)
        return ((z.reshape(len(z), -1) + mt) @ inv).reshape(z.shape)

    # -- the same in numpy (storage and display) ---------------------------------------------------

    def forward_np(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        pixels = x * _channel(STD, x.shape[2:]) + _channel(MEAN, x.shape[2:])
        return ((pixels.reshape(len(x), -1) - self.mean) @ self.transform).reshape(x.shape)

    def inverse_np(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float32)
        pixels = ((z.reshape(len(z), -1) + self.mean @ self.transform) @ self.inverse).reshape(
            z.shape
        )
        return (pixels - _channel(MEAN, z.shape[2:])) / _channel(STD, z.shape[2:])


def fit(pixels: np.ndarray, eps: float = EPS, *, device: Any = None, chunk: int = 10_000) -> ZCA:
    """Fit kornia's ZCAWhitening(eps, compute_inv=True) on uint8 N x H x W x C pixels scaled to
    [0, 1] (MTT's ToTensor), on ``device`` (float32; the images go over in chunks of ``chunk``
    only to build the tensor, the fit itself is kornia's on the whole set)."""
    import kornia as K
    import torch

    n = len(pixels)
    shape = (pixels.shape[3], pixels.shape[1], pixels.shape[2])
    x = torch.empty((n, *shape), dtype=torch.float32, device=device)
    for s in range(0, n, chunk):
        part = torch.from_numpy(np.ascontiguousarray(pixels[s : s + chunk]))
        x[s : s + chunk] = part.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if n > x[0].numel():
        module = K.enhance.ZCAWhitening(eps=float(eps), compute_inv=True).fit(x)
        del x
        return ZCA.from_kornia(module, shape)
    return _fit_gram(x, float(eps), shape)


def _fit_gram(x: torch.Tensor, eps: float, shape: tuple[int, int, int]) -> ZCA:
    """kornia's matrices for N <= D images (a subset or a stand-in, never MTT's 50,000 x 3072)
    through the N x N Gram matrix instead of the SVD of the D x D covariance (minutes on a
    CPU): the covariance has rank < N, and kornia's U (S + eps)^(-1/2) U^T is
    eps^(-1/2) on its null space. Same formula, unbiased covariance; tests/test_zca.py checks
    it against kornia."""
    import torch

    n = len(x)
    flat = x.reshape(n, -1).double()
    mean = flat.mean(0, keepdim=True)
    centred = (flat - mean) / (n - 1) ** 0.5
    lam, v = torch.linalg.eigh(centred @ centred.T)
    keep = lam > lam.max().clamp_min(1e-300) * 1e-10
    lam, v = lam[keep], v[:, keep]
    u = centred.T @ v / lam.sqrt()  # D x r orthonormal eigenvectors of the covariance
    root = eps**0.5
    transform = (u * ((lam + eps).rsqrt() - 1 / root)) @ u.T
    inverse = (u * ((lam + eps).sqrt() - root)) @ u.T
    transform.diagonal().add_(1 / root)
    inverse.diagonal().add_(root)
    return ZCA(mean.float().numpy(), transform.float().numpy(), inverse.float().numpy(), eps, shape)


# -- telling a file's space ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpaceGuess:
    """Which space a set of images is in, by the scale of its pixels.

    ``rms``: the file's root-mean-square value; ``rms_normalised`` and ``rms_zca``: that of real
    training images in each space. ``position`` is where the file lies between the two on a log
    scale (0: like ZCA images, 1: like normalised ones). ZCA with eps 0.1 shrinks CIFAR's
    images about tenfold, so the two are far apart; a file in between is not told."""

    verdict: str  # "zca" | "normalised" | "unsure"
    rms: float
    rms_normalised: float
    rms_zca: float
    position: float


def guess_space(
    images: np.ndarray, zca: ZCA, real_normalised: np.ndarray, margin: float = 0.3
) -> SpaceGuess:
    """Tell ZCA-space images from normalised ones by their scale against real images in both
    spaces (``real_normalised``: a sample of normalised training images). Distilled images keep
    roughly the scale of their space's real images; a file whose scale lies within ``margin``
    of the middle (on the log scale) is "unsure", and so is one far outside both."""
    rms = float(np.sqrt(np.mean(np.square(images, dtype=np.float64))))
    rms_n = float(np.sqrt(np.mean(np.square(real_normalised, dtype=np.float64))))
    rms_z = float(np.sqrt(np.mean(np.square(zca.forward_np(real_normalised), dtype=np.float64))))
    if not (rms > 0 and rms_n > 0 and rms_z > 0) or abs(np.log(rms_n / rms_z)) < 1e-6:
        return SpaceGuess("unsure", rms, rms_n, rms_z, float("nan"))
    position = float(np.log(rms / rms_z) / np.log(rms_n / rms_z))
    half = 0.5 - margin / 2
    if -1.0 <= position < half:
        verdict = "zca"
    elif 1 - half < position <= 2.0:
        verdict = "normalised"
    else:
        verdict = "unsure"
    return SpaceGuess(verdict, rms, rms_n, rms_z, position)
