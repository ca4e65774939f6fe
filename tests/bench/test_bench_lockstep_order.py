"""bench-train's lock-step order: every training pipeline gets the same mix of predecessors."""

from collections import Counter
from itertools import pairwise

import torch

from cnnlab.bench import train as bench


class _Precision:
    def autocast(self):
        return torch.autocast("cpu", enabled=False)


class _Seen(torch.nn.Module):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, x):
        self.log.append("inference")
        return x


def _sequence(names, ticks):
    """What ran, in order, over `ticks` lock-step ticks of pipelines `names` (plus inference)."""
    log = []

    def stepper(batches):
        log.append(batches())
        return 0.0, 1, None

    stepper.model = _Seen(log)
    p = bench._Pipelines({n: (lambda n=n: n) for n in names}, (torch.zeros(1, 1), None), {})
    clock = bench._Clock(torch.device("cpu"))
    for i in range(ticks):
        bench._lockstep_tick(p, stepper, _Precision(), clock, i, None, 0)
    return log


def _predecessors(log):
    pairs = Counter(pairwise(log))
    return {b: Counter({a: k for (a, bb), k in pairs.items() if bb == b}) for b in set(log)}


def test_cnnlab_and_ceiling_follow_the_inference_pass_equally_often():
    log = _sequence(["cnnlab", "ceiling"], 12)
    assert Counter(log) == {"cnnlab": 12, "ceiling": 12, "inference": 12}
    before = _predecessors(log)
    # tick 0's first step has no predecessor; over whole cycles the mix is the same for both
    assert before["cnnlab"]["inference"] + (log[0] == "cnnlab") == 6
    assert before["ceiling"]["inference"] + (log[0] == "ceiling") == 6
    assert before["cnnlab"]["ceiling"] == before["ceiling"]["cnnlab"] == 6


def test_three_training_pipelines_each_follow_every_other_equally_often():
    names = ["cnnlab", "ceiling", "ceiling_nchw"]
    log = _sequence(names, 12)
    before = _predecessors(["inference"] + log)  # as if a previous tick had ended
    for b in names:
        assert before[b]["inference"] == 4, (b, before[b])
        for a in names:
            if a != b:
                assert before[b][a] == 4, (a, b, before[b])
