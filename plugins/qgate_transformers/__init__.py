"""What the Hugging Face-style backends share (hf, exl2, awq): a library, not a plugin.

A model of any of these formats is a folder with ``config.json``, ``*.safetensors`` weights and
the tokenizer files; each backend adds what its format says about quantization. This package
reads such a folder without loading weights and without unpickling anything
(:mod:`~qgate_transformers.folder` and the modules it builds on), tokenizes with the folder's own
tokenizer (:mod:`~qgate_transformers.tokenizer`), reduces logits held in torch tensors
(:mod:`~qgate_transformers.reduction`), runs a transformers causal LM
(:mod:`~qgate_transformers.model`) and hands out float weights
(:mod:`~qgate_transformers.weights`). It registers nothing: the backends import it.
"""
