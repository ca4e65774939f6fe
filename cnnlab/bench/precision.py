"""`cnnlab bench-train --vs-precision`: the job's training rate in fp32 and in 16-bit (bf16_mixed,
bf16_pure), each in channels_last and in NCHW, side by side on one machine.

Every variant is cnnlab.bench.train.run on the job's config with the variant's overrides, one
round at a time, the variants' order rotating between rounds (so a load that comes and goes
touches them all alike); the figure per variant is the median over rounds of its end-to-end
images/s (cnnlab's loader + step), and the verdict the ratio to fp32 in the job's memory order.
Whether 16-bit is native on this CPU (cnnlab.machine.native_16bit) is printed beside it: where it
is emulated, the ratio measures the emulation.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from cnnlab.errors import UsageError

# name -> overrides; the first is the reference
VARIANTS = {"fp32": ["precision=fp32", "trainer.channels_last=true"],
            "fp32, NCHW": ["precision=fp32", "trainer.channels_last=false"],
            "bf16_mixed": ["precision=bf16_mixed", "trainer.channels_last=true"],
            "bf16_mixed, NCHW": ["precision=bf16_mixed", "trainer.channels_last=false"],
            "bf16_pure": ["precision=bf16_pure", "trainer.channels_last=true"],
            "bf16_pure, NCHW": ["precision=bf16_pure", "trainer.channels_last=false"]}
REFERENCE = "fp32"


@dataclass
class PrecisionResult:
    variants: list
    rates: dict = field(default_factory=dict)  # variant -> [images/s per round]
    cpu: str = ""

    def rate(self, variant: str) -> float:
        return statistics.median(self.rates.get(variant) or [float("nan")])

    def ratio(self, variant: str) -> float:
        return self.rate(variant) / self.rate(REFERENCE)


def check_overrides(overrides: list[str]) -> None:
    taken = [o for o in overrides if o.lstrip("+~").startswith(("precision", "trainer.channels_last"))]
    if taken:
        raise UsageError(f"--vs-precision sets precision and trainer.channels_last itself; drop '{taken[0]}'")


def run(overrides: list[str], steps: int = 32, warmup: int = 3, repeats: int = 3,
        variants=tuple(VARIANTS), echo=print) -> PrecisionResult:
    """Measure each variant `repeats` times, one round of all at a time (see the module docstring)."""
    import warnings

    from cnnlab.bench import train as bench
    from cnnlab.config import compose
    from cnnlab.machine import cpu_summary

    check_overrides(overrides)
    result = PrecisionResult(list(variants), cpu=cpu_summary())
    configs = {v: compose([*overrides, *VARIANTS[v], "trainer.progress=none"]) for v in variants}
    for r in range(repeats):
        order = result.variants[r % len(variants):] + result.variants[:r % len(variants)]
        for v in order:
            with warnings.catch_warnings():  # the emulation warning is printed once, by the command
                warnings.simplefilter("ignore")
                measured = bench.run(configs[v], steps=steps, warmup=warmup, repeats=1)
            rate = measured.steps["cnnlab"].images_per_sec()
            result.rates.setdefault(v, []).append(rate)
            echo(f"  round {r + 1}/{repeats} {v:17s} {rate:,.0f} img/s")
    return result


def rows(result: PrecisionResult) -> list[tuple[dict, dict]]:
    """(head extras, metrics) per variant, for outputs/bench.csv."""
    return [({"bench_pipeline": f"precision {v}"},
             {"bench_images_per_sec": result.rate(v), "bench_vs_fp32": result.ratio(v),
              "bench_rounds": len(result.rates[v]), "bench_cpu": result.cpu})
            for v in result.variants if v in result.rates]
