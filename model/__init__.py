"""Training-free MIND-SSC instance optimisation for iUS <-> MR registration (see docs/MODEL.md)."""
from .config import load_config
from .pipeline import Registration, Result

__all__ = ["Registration", "Result", "load_config"]
