"""Generations shared by the checks of a run; the reference's are cached by content hash.

A generation check asks for the same prompts from the subject and the reference. The reference's
answers depend only on (reference bytes, prompts, decoding settings, context size), so they are
stored in the reference cache as JSON and a second run regenerates nothing for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

from qgate.backend import Generation, GenerationSettings
from qgate.cache import ReferenceCache, cache_key
from qgate.progress import Progress
from qgate.session import ModelHandle


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, already formatted for the model, and how to decode it."""

    prompt: str
    settings: GenerationSettings


class Generations:
    def __init__(
        self,
        cache: ReferenceCache,
        *,
        counters: Counter[str],
        timings: defaultdict[str, float],
        progress: Progress,
    ):
        self.cache = cache
        self.counters = counters
        self.timings = timings
        self.progress = progress
        self._memo: dict[tuple[str, str], list[Generation]] = {}

    def run(
        self, handle: ModelHandle, requests: list[GenerationRequest], *, task: str, cacheable: bool
    ) -> list[Generation]:
        """Generate for every request, in order.

        :param cacheable: store and reuse the outputs on disk (for the reference, whose bytes do
            not change between runs; a subject under review is always generated afresh).
        """
        digest = hashlib.sha256(
            json.dumps([[r.prompt, asdict(r.settings)] for r in requests], sort_keys=True).encode()
        ).hexdigest()
        memo_key = (str(handle.path), digest)
        if memo_key in self._memo:
            return self._memo[memo_key]
        key = None
        if cacheable:
            key = cache_key(
                "generations",
                model=handle.digest,
                requests=digest,
                n_ctx=handle.options.n_ctx,
                backend=handle.backend.name,
            )
            cached = self.cache.load_json(key)
            if isinstance(cached, list) and len(cached) == len(requests):
                try:
                    outputs = [Generation(**item) for item in cached]
                except TypeError:
                    outputs = None
                if outputs is not None:
                    self.counters["generation_cache_hits"] += 1
                    self.progress.log(
                        f"{task}: {len(outputs)} reference generations from the cache"
                    )
                    self._memo[memo_key] = outputs
                    return outputs
        model = handle.model
        outputs = []
        started = time.perf_counter()
        for index, request in enumerate(requests):
            outputs.append(model.generate(request.prompt, request.settings))
            self.counters["generations"] += 1
            self.progress.update(task, index + 1, len(requests), "prompts")
        self.timings["generate"] += time.perf_counter() - started
        if key is not None:
            self.counters["generation_cache_misses"] += 1
            self.cache.store_json(key, [asdict(g) for g in outputs])
        self._memo[memo_key] = outputs
        return outputs
