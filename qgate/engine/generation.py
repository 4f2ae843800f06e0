"""Generations shared by the checks of a run; the reference's are cached by content hash.

A generation check asks for the same prompts from the subject and the reference. The reference's
answers depend only on the reference's bytes, the prompts, the decoding settings and the backend's
settings (context size, KV cache type, GPU layers, seed, ``extra``, library versions), so they are
stored in the reference cache as JSON under all of those and a second run regenerates nothing for
it. Like every cache entry they are verified when read (:mod:`qgate.cache`): an entry for other
inputs, damaged, or not shaped like generations is discarded and generated again. With
``evaluation.cache_spot_check: N``, N randomly chosen prompts are generated again by the real
reference and must give the same tokens (decoding here is deterministic: greedy, or sampled
from a fixed seed), else the whole entry is discarded.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict

from qgate.backend import Generation, GenerationRequest
from qgate.cache import Entry, ReferenceCache, backend_material, spot_check_picks
from qgate.cached_outputs import check_generations
from qgate.handle import ModelHandle
from qgate.instruments import Instruments


class Generations:
    def __init__(
        self,
        cache: ReferenceCache,
        *,
        instruments: Instruments,
        spot_check: int = 0,
        spot_check_seed: int = 0,
    ):
        self.cache = cache
        self.instruments = instruments
        #: cached reference generations to regenerate and compare, per entry read
        self.spot_check = spot_check
        self.spot_check_seed = spot_check_seed
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
        entry = None
        if cacheable:
            entry = Entry.of(
                "generations",
                model=handle.digest,
                requests=digest,
                **backend_material(handle.backend.name, handle.options),
            )
            cached = self.cache.load_json(
                entry, validate=lambda document: check_generations(document, len(requests))
            )
            outputs = [Generation(**item) for item in cached] if cached is not None else []
            if cached is not None and self._agrees(handle, requests, entry, outputs):
                self.instruments.counters["generation_cache_hits"] += 1
                self.instruments.progress.log(
                    f"{task}: {len(outputs)} reference generations from the cache"
                )
                self._memo[memo_key] = outputs
                return outputs
        model = handle.model
        outputs = []
        started = time.perf_counter()
        for index, request in enumerate(requests):
            outputs.append(model.generate(request.prompt, request.settings))
            self.instruments.counters["generations"] += 1
            self.instruments.progress.update(task, index + 1, len(requests), "prompts")
        self.instruments.timings["generate"] += time.perf_counter() - started
        if entry is not None:
            self.instruments.counters["generation_cache_misses"] += 1
            self.cache.store_json(entry, [asdict(g) for g in outputs])
        self._memo[memo_key] = outputs
        return outputs

    def _agrees(
        self,
        handle: ModelHandle,
        requests: list[GenerationRequest],
        entry: Entry,
        outputs: list[Generation],
    ) -> bool:
        """With a spot-check: whether the reference, generating a few requests again, gives
        the cached tokens; a difference discards the entry (reported)."""
        if not self.spot_check:
            return True
        handle.model  # noqa: B018 - loaded first: its time counts as loading, not checking
        started = time.perf_counter()
        picks = spot_check_picks(self.spot_check_seed, entry, len(requests), self.spot_check)
        agreed = True
        for index in picks:
            fresh = handle.model.generate(requests[index].prompt, requests[index].settings)
            self.instruments.counters["spot_check_generations"] += 1
            cached = outputs[index]
            if (fresh.tokens, fresh.finish_reason) != (cached.tokens, cached.finish_reason):
                agreed = False
                self.cache.reject(
                    entry, f"spot-check of prompt {index}: a fresh generation gives other tokens"
                )
                break
        self.cache.record_spot_check(
            entry, {"prompts": picks, "seed": self.spot_check_seed, "agreed": agreed}
        )
        self.instruments.timings["spot_check"] += time.perf_counter() - started
        return agreed
