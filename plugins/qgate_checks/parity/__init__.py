"""Parity checks: the release bugs that are not weight damage.

A quant can have bit-identical weights and still fail its users: another pre-tokenizer, an EOS
id that never comes, a chat template lost in conversion, a RoPE base the runtime reads from the
wrong key, NaN block scales in one tensor, or a runtime that disagrees with the reference even at
full precision. Likelihood checks either pass these or fail them without saying why. Each module
here is one check, registered on its own, that finds one kind and names the cause:

- :mod:`.tokenizer` (``tokenizer-parity``): the stored tokenizer and the tokens of probe texts;
- :mod:`.special_tokens` (``special-tokens``): BOS/EOS/EOT/PAD, and whether the subject still
  stops where the reference stops (:mod:`.stopping`);
- :mod:`.chat_template` (``chat-template``): present, and rendering fixed conversations alike;
- :mod:`.config` (``config-parity``): the normalised hyperparameters, as each runtime reads them;
- :mod:`.integrity` (``tensor-integrity``): NaN/Inf (block scales too), all-zero and short
  tensors, shapes against the reference;
- :mod:`.runtime` (``runtime-parity``): an implausibly low perplexity, and the runtime's own
  disagreement with the reference at full precision (:mod:`.floor`).

:mod:`.differences` holds what they share: a named difference and how the report shows it.
"""
