"""Curvature of the loss (paper section 4.3, appendix A): Hessian-vector products, Hutchinson
trace, stochastic Lanczos quadrature, and the loss plane of appendix A.

Tensors and configs in, dataclasses out: nothing here touches the database or the CLI.
"""

from ddsem.curvature.hessian import HessianOperator, MatrixOperator, rademacher
from ddsem.curvature.lanczos import LanczosResult, lanczos, spectral_density
from ddsem.curvature.landscape import Landscape, Plane, compute_landscape, plane_through
from ddsem.curvature.measure import PointMeasurement, measure, train_with_checkpoints
from ddsem.curvature.trace import TraceEstimate, hutchinson_trace

__all__ = [
    "HessianOperator",
    "Landscape",
    "LanczosResult",
    "MatrixOperator",
    "Plane",
    "PointMeasurement",
    "TraceEstimate",
    "compute_landscape",
    "hutchinson_trace",
    "lanczos",
    "measure",
    "plane_through",
    "rademacher",
    "spectral_density",
    "train_with_checkpoints",
]
