"""``python -m qgate_github STEP``: the Action's steps without going through ``qgate``."""

from qgate_github.command import github

github(prog_name="python -m qgate_github")
