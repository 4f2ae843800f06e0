"""The ``qgate`` command line: one module per command group.

``check`` (:mod:`.check`) and ``baseline`` (:mod:`.baseline`) set up a run from the same options
(:mod:`.run_options`); ``report``, ``merge`` and ``verify`` read results files (:mod:`.results`);
``policy``, ``plugins`` and ``inspect`` look at policies, plugins and models. :mod:`.app` builds
the group, plugins' commands included, and is the process entry point (``qgate.cli:main``).
"""

from qgate.cli.app import main, make_cli
from qgate.cli.common import contained, exit_code_for, write_reports
from qgate.cli.plugins import plugin_listing

__all__ = ["contained", "exit_code_for", "main", "make_cli", "plugin_listing", "write_reports"]
