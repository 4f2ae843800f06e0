"""``payoff``: is the quant actually faster and smaller than its reference?

Quantizing is meant to buy speed and memory. This check measures both models on the same machine
with the same backend settings: load time, prompt-processing tokens/s (one pass over a fixed
prompt of ``prompt_tokens`` tokens), greedy generation tokens/s (fixed prompt, fixed budget), peak
memory and file size, and judges the ratios subject / reference against the policy's floors.

Each run happens in a short-lived process of its own (``python -m qgate_checks.payoff.probe``)
that loads the model by backend name and path: one process cannot tell two loaded models' peak
memory apart, and a fresh process keeps one model's warm state from flattering the other. After
``warmup`` discarded runs of each model, ``repetitions`` runs alternate reference, subject,
reference, subject, ... so slow drift on a shared machine hits both alike; the figures are
medians, and each ratio gets a bootstrap interval over the repetitions (paired: run ``i`` of the
subject with run ``i`` of the reference). An interval that straddles a floor is inconclusive
and gets the policy's ``on_inconclusive``: a noisy runner asks for a human, it does not decide.

When the shared scoring pass has already run for this subject (list ``payoff`` after
``kl-divergence``), the mean KL divergence is read from it at no cost and the report gives the
gain per unit of quality lost, e.g. ``size_saving_per_kld = (1 - size_ratio) / mean_kld``.

The check reports what it measures, not what a quant type promises: Gemma 3 270M's "Q2_K" keeps
its 170M-parameter embedding at Q8_0, so its file is barely smaller than Q8_0's.
"""

from __future__ import annotations

from qgate.check import Check
from qgate.hookspecs import hookimpl
from qgate_checks.payoff.check import PayoffCheck
from qgate_checks.payoff.options import PayoffOptions

__all__ = ["PayoffCheck", "PayoffOptions"]


@hookimpl
def qgate_checks() -> list[Check]:
    return [PayoffCheck()]
