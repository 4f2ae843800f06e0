"""qgate: a plugin-based CI quality gate for quantized LLM releases."""

from importlib.metadata import PackageNotFoundError, version

#: the distribution's name on PyPI ("qgate" there is an unrelated project); the import package,
#: the entry-point group and the command are ``qgate``
DISTRIBUTION = "qgate-llm"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["DISTRIBUTION", "__version__"]
