"""``quant-floor``: static rules on how a model was quantized, without running it.

Below 4 bits quality loss becomes a cliff, mixture-of-experts models lose more at the same bits,
and a quantized KV cache hurts long contexts. These floors catch the obvious cases in
milliseconds, from metadata alone: minimum bits per weight, tensor types forbidden for named
tensors (globs), and a KV cache type floor from a context size on (inclusive).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from qgate.backend import KV_CACHE_BITS
from qgate.check import Check, CheckContext
from qgate.errors import PolicyError
from qgate.hookspecs import hookimpl
from qgate.options import option
from qgate.results import CheckResult, Comparison, SkipCause
from qgate.stats import exact_evidence


@dataclass
class QuantFloorOptions:
    min_bits_per_weight: float | None = option(None, "smallest allowed bits per weight", minimum=0)
    forbidden_tensor_types: dict[str, list[str]] = option(
        default_factory=dict,
        help="tensor-name glob -> tensor types it must not have, e.g. {'output.weight': [Q2_K]}",
    )
    min_kv_cache: str | None = option(None, "least precise KV cache type allowed (e.g. q8_0)")
    kv_cache_from_context: int = option(
        0,
        "apply min_kv_cache to every run at this context or longer (inclusive: 4096 covers a "
        "run at exactly 4,096 tokens)",
        minimum=0,
    )


class QuantFloorCheck(Check[QuantFloorOptions]):
    name = "quant-floor"
    description = "static floors: bits per weight, forbidden tensor types, KV cache type"
    Options = QuantFloorOptions

    def run(self, ctx: CheckContext[QuantFloorOptions]) -> list[CheckResult]:
        options = ctx.options
        info = ctx.subject.info
        results = []
        if options.min_bits_per_weight is not None:
            bpw = info.bits_per_weight
            results.append(
                ctx.result(
                    "bits_per_weight",
                    bpw,
                    threshold=options.min_bits_per_weight,
                    comparison=Comparison.GE,
                    message=f"{bpw:.3f} bits per weight ({info.file_type or 'unknown type'})"
                    if bpw is not None
                    else "the backend does not report bits per weight",
                    details=exact_evidence(),
                )
            )
        if options.forbidden_tensor_types:
            offending = sorted(
                f"{name} ({tensor_type})"
                for name, tensor_type in info.tensor_type_by_name.items()
                for pattern, forbidden in options.forbidden_tensor_types.items()
                if fnmatch.fnmatchcase(name, pattern)
                and tensor_type.upper() in {f.upper() for f in forbidden}
            )
            shown = ", ".join(offending[:5]) + (
                f" and {len(offending) - 5} more" if len(offending) > 5 else ""
            )
            results.append(
                ctx.result(
                    "forbidden_tensor_types",
                    float(len(offending)),
                    threshold=0,
                    comparison=Comparison.LE,
                    message=f"{len(offending)} tensors of a forbidden type"
                    + (f": {shown}" if offending else ""),
                    details={"offending": offending, **exact_evidence()},
                )
            )
        if options.min_kv_cache is not None:
            results.append(self._kv_cache(ctx, options))
        if not results:
            return [ctx.skip("no floors configured")]
        return results

    def _kv_cache(
        self, ctx: CheckContext[QuantFloorOptions], options: QuantFloorOptions
    ) -> CheckResult:
        assert options.min_kv_cache is not None
        floor = KV_CACHE_BITS.get(options.min_kv_cache)
        if floor is None:
            raise PolicyError(
                f"unknown KV cache type {options.min_kv_cache!r}; known: {', '.join(KV_CACHE_BITS)}",
                key_path=f"checks[{ctx.spec.key}].options.min_kv_cache",
            )
        boundary = options.kv_cache_from_context
        applicable = [(kv, n) for kv, n in ctx.kv_cache_configurations() if n >= boundary]
        if not applicable:
            return ctx.skip(
                f"no KV cache runs at {boundary} tokens or more: the floor does not apply",
                "kv_cache",
                cause=SkipCause.NOT_APPLICABLE,
            )
        kv, n_ctx = min(applicable, key=lambda config: KV_CACHE_BITS.get(config[0], 0))
        listed = ", ".join(f"{k} at {n}" for k, n in sorted(set(applicable)))
        return ctx.result(
            "kv_cache_bits",
            KV_CACHE_BITS.get(kv, 0),
            threshold=floor,
            comparison=Comparison.GE,
            message=f"least precise KV cache {kv} at context {n_ctx} (runs: {listed}); floor "
            f"{options.min_kv_cache} from {boundary} tokens on",
            details=exact_evidence(),
        )


@hookimpl
def qgate_checks() -> list[Check]:
    return [QuantFloorCheck()]
