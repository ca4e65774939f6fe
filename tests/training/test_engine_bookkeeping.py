"""The engine's per-step sums (EpochStats): exact, and cheap per step."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.training.engine import EpochStats


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _steps(seed=0, steps=7):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(steps):
        n = 64 if k < steps - 1 else 15  # a short last batch, as an epoch's end has
        logits = torch.randn(n, 10, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        loss = (torch.rand((), generator=g) * 3).to(torch.float32)
        out.append((loss, logits, y))
    return out


def test_epoch_sums_are_the_exact_float64_sums_of_loss_times_batch_size():
    stats = EpochStats.begin("cpu", None, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    steps = _steps()
    for loss, logits, y in steps:
        stats.add(loss, logits, y)
    want_loss, want_correct = 0.0, 0
    for loss, logits, y in steps:  # python floats are float64: the same rounding, step by step
        want_loss += float(loss) * y.shape[0]
        want_correct += sum(int(row.argmax()) == int(t) for row, t in zip(logits, y))
    assert stats.loss_sum.dtype == torch.float64 and stats.loss_sum.item() == want_loss
    assert int(stats.correct) == want_correct and stats.seen == sum(y.shape[0] for _, _, y in steps)
    assert stats.loss == want_loss / stats.seen


def test_soft_targets_count_their_argmax_class():
    stats = EpochStats.begin("cpu", None, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    soft = torch.tensor([[0.1, 0.7, 0.2], [0.2, 0.3, 0.5]])  # argmax 1 (hit), 2 (miss)
    stats.add(torch.tensor(0.5), logits, soft)
    assert int(stats.correct) == 1 and stats.loss_sum.item() == 1.0


def test_the_running_loss_sum_is_one_in_place_op_per_step():
    """No float64 copy of the loss and no product tensor each step: one fused add."""
    stats = EpochStats.begin("cpu", None, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    loss, logits, y = _steps(steps=1)[0]
    with _Ops() as mode:
        stats.add(loss, logits, y)
    assert "_to_copy" not in mode.ops and "mul" not in mode.ops, mode.ops
