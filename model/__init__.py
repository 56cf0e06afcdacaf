"""Training-free MIND-SSC instance optimisation for iUS <-> MR registration (see docs/MODEL.md)."""
import os

# cuBLAS reductions are reproducible only with a fixed workspace (PyTorch's reproducibility notes); it must be
# set before the first CUDA call, so here, at import. A value set by the caller wins.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from .config import load_config  # noqa: E402
from .pipeline import Registration, Result  # noqa: E402

__all__ = ["Registration", "Result", "load_config"]
