"""lightning_xai: watch what your image model looks at while it trains."""

from lightning_xai import functional

__version__ = "0.1.0"

__all__ = ["__version__", "functional"]
