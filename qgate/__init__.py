"""qgate: a plugin-based CI quality gate for quantized LLM releases."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qgate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
