"""qgate's GitHub Action (``action.yml``): its steps, run as ``qgate github STEP``.

A plugin like any other, registered through the ``qgate_commands`` hook: the engine knows nothing
of GitHub. ``python -m qgate_github STEP`` runs the same steps. Steps, in the order the action
runs them (:mod:`.steps`):

``cache-key``  the key of the reference cache (``actions/cache``): OS, policy name and digest,
               the reference's sha256, and qgate's version; and its directory (outside the
               workspace unless the ``cache-dir`` input says otherwise).
``run``        run ``qgate check`` / ``baseline`` / ``merge`` from the action's inputs (environment
               variables ``QGATE_*``) into a fresh directory, copy the reports to the output paths
               (after removing whatever stale files were there), and record the step outputs
               ``exit-code``, ``run-id`` and ``invocation-id``. It exits 0, so the summary,
               annotations and artifacts are still written when the gate fails; the action's last
               step exits with the recorded code.
``outputs``    the action's outputs: ``verdict``, ``report`` (HTML path), ``results`` (JSON path),
               ``artifact-name``.
``summary``    the Markdown summary, appended to ``$GITHUB_STEP_SUMMARY``.
``annotate``   an ``::error`` per failing result and a ``::warning`` per warning.
``comment``    post the Markdown summary as ONE pull-request comment, found again by a hidden
               marker and updated on later pushes (REST API through urllib, ``GITHUB_TOKEN``).

The steps after ``run`` report only results that this step's qgate wrote: the file at the ``json``
path must carry the run id and the invocation id that ``run`` recorded, and its verdicts must
agree with its numbers (:func:`qgate.integrity.read_results`). A missing, stale, foreign or
edited file is an ``error`` verdict whose reason the summary and the annotation show.

Everything a model says about itself (labels, metadata, messages) is untrusted: workflow commands
are escaped, qgate's own output is fenced with ``::stop-commands::`` so a model name cannot inject
one, and in the step summary and the comment it can neither mention anyone, nor link, nor reverse
text (:func:`~qgate_github.untrusted.neutralise`).

Modules, one job each: :mod:`.workflow` (workflow commands, step outputs), :mod:`.untrusted`
(untrusted text in Markdown), :mod:`.results` (which results a step may report), :mod:`.summary`,
:mod:`.api` (the REST client), :mod:`.comment` (the one pull-request comment), :mod:`.arguments`
and :mod:`.run` (running qgate), :mod:`.cache_key`, :mod:`.steps` and :mod:`.command`.
"""

from __future__ import annotations

import click

from qgate.hookspecs import hookimpl
from qgate_github.command import github


@hookimpl
def qgate_commands() -> list[click.Command]:
    return [github]
