"""MAGI: masked autoregressive video generation with Complete Teacher Forcing."""

from magi.config import MagiConfig

__all__ = ["MagiConfig", "Magi", "MagiPipeline"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import magi.data` does not build the model stack.
    if name == "Magi":
        from magi.model.magi import Magi

        return Magi
    if name == "MagiPipeline":
        from magi.pipeline import MagiPipeline

        return MagiPipeline
    raise AttributeError(f"module 'magi' has no attribute {name!r}")
