"""`cnnlab bench-train`: where a training step's time goes, and what cnnlab's data path costs.

In the spirit of timm's benchmark.py: warm-up steps, then measured steps, for the model, data,
augmentation and precision of a `cnnlab train` config (built by cnnlab.training.recipe.build_parts). All
pipelines train the same model with one optimizer:

  cnnlab      the training loader (uint8 split on the device, batched augmentation, normalisation)
              feeding the engine's step: what `cnnlab train` does per batch
  ceiling     the same step on one fixed batch made once by that loader (augmented, normalised,
              on the device): no data work at all, the fastest this model trains here
  dataloader  (optional) torch's DataLoader over the same images with per-image torchvision v2
              transforms equivalent to the preset in `workers` processes, as the reference
              training scripts do, then to the device
  inference   a forward pass of the fixed batch in eval mode under torch.inference_mode
  ceiling_nchw / ceiling_nhwc  (optional) the ceiling's twin in the other memory order: the
              same weights in NCHW when the run is channels_last, NHWC when it is not

A step is split into phases by wall-clock marks (the device synchronised at each on CUDA):
data (the next batch, ready on the device), forward (forward and loss under autocast), backward
(until the last parameter gradient is accumulated: post-accumulate-grad hooks), optimizer
(zero_grad, clipping, the update, loss scaling: everything after the last gradient).

Noise: on a shared CPU a step can take 10-30x its usual time while other jobs hold the cores
torch's intra-op threads wait for. So the in-process pipelines run in lock step (one cnnlab
step, one ceiling step, one inference pass, repeat, the training steps in alternating orders
so each follows the others equally often: tick_order) and a slow spell hits them all alike.
Pipelines with worker processes (the DataLoader, or a streamed cnnlab loader) cannot
interleave (their workers would run during the other steps), so they run in blocks, one per
round, their workers shut down in between. Figures are means over the middle half of each
round's steps (lock-step pipelines: of the ticks, the same ticks for all, in runs as long as the cnnlab
loader's chunk, so the step that makes a chunk's batches counts), so spikes drop out and the
phases still add up to the step; ratios divide these images/s, also per round to show how much
they move with the load.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnlab.errors import UsageError

PHASES = ("data", "forward", "backward", "optimizer")
# --vs-memory-format: the ceiling's twin in the other memory order, by the run's channels_last
OTHER_FORMAT = {True: "ceiling_nchw", False: "ceiling_nhwc"}


@dataclass
class Steps:
    """Per-step records of one pipeline: wall seconds, images, round, seconds per phase.

    Its figures are means over the middle half of each round's steps (ranked by time per image,
    or for lock-step pipelines by the time of the whole tick, so they all keep the same ticks;
    all steps under four): spikes drop out, and the phases still add up to the step. With `block`
    > 1 the steps are ranked and kept in runs of `block` consecutive steps of a round (a
    shorter tail joins the run before it; all runs under four): a loader that makes `block`
    batches at a time pays for them in one step of each run, which a cut by single steps would
    drop as a spike."""

    seconds: list = field(default_factory=list)
    images: list = field(default_factory=list)
    rounds: list = field(default_factory=list)
    phases: dict = field(default_factory=lambda: {p: [] for p in PHASES})
    rank: list = field(default_factory=list)  # lock step: the whole tick's time, shared
    block: int = 1  # steps ranked and kept together (the cnnlab loader's chunk)

    def add(self, seconds: float, images: int, phases: dict | None, round_: int) -> None:
        self.seconds.append(seconds)
        self.images.append(images)
        self.rounds.append(round_)
        for p, v in (phases or {}).items():
            self.phases[p].append(v)

    def per_image(self, round_: int | None = None) -> list[float]:
        return [s / n for s, n, r in zip(self.seconds, self.images, self.rounds)
                if round_ is None or r == round_]

    def middle(self, round_: int | None = None) -> list[int]:
        """Indices of the middle half of a round's steps by time per image, or by `rank` when
        set; round_=None: each round's middle half, together. Rounds are cut one by one because
        the machine's load can differ between them: one cut over all rounds kept mostly the
        ticks of the quieter rounds, and the overall ratio could then fall outside every
        round's own (0.93x against per-round 0.94-0.95, for example)."""
        if round_ is None:
            return sorted(i for r in sorted(set(self.rounds)) for i in self.middle(r))
        rank = self.rank or [s / n for s, n in zip(self.seconds, self.images)]
        idx = [i for i, x in enumerate(self.rounds) if x == round_]
        # consecutive steps, `block` at a time
        runs = [idx[k:k + self.block] for k in range(0, len(idx), self.block)]
        if len(runs) > 1 and len(runs[-1]) < self.block:
            tail = runs.pop()
            runs[-1] = runs[-1] + tail
        runs.sort(key=lambda run: sum(rank[i] for i in run) / len(run))
        cut = len(runs) // 4
        return sorted(i for run in runs[cut:len(runs) - cut] for i in run)

    def images_per_sec(self, round_: int | None = None) -> float:
        keep = self.middle(round_)
        return sum(self.images[i] for i in keep) / max(sum(self.seconds[i] for i in keep), 1e-12)

    def ms(self, phase: str | None = None) -> float:
        """Milliseconds per step of one phase, or of the whole step."""
        keep = self.middle()
        values = self.seconds if phase is None else self.phases[phase]
        return 1000 * sum(values[i] for i in keep) / len(keep)


@dataclass
class Result:
    steps: dict  # pipeline -> Steps
    lockstep: tuple  # the pipelines measured step by step side by side
    rounds: int
    batch_size: int
    params: int
    gflops_per_image: float  # 2 x MACs of one forward pass
    peak_mem_mb: float
    device: str
    device_name: str
    threads: int
    precision: str
    channels_last: bool
    warmup: int
    workers: int | None = None
    transforms: list = field(default_factory=list)  # the DataLoader's per-image transforms
    left_out: list = field(default_factory=list)  # preset ops with no torchvision equivalent
    torch_version: str = ""

    @property
    def training(self) -> list[str]:
        return [name for name in self.steps if name != "inference"]

    def round_ratios(self, a: str, b: str) -> list[float]:
        """images/s of pipeline `a` over pipeline `b` in each round (lock step: the same ticks)."""
        return [self.steps[a].images_per_sec(r) / self.steps[b].images_per_sec(r)
                for r in range(self.rounds)]

    def ratio(self, a: str, b: str) -> float:
        """images/s of pipeline `a` over pipeline `b` over all rounds (lock step: the same
        ticks); round_ratios shows how much it moves with the machine's load."""
        return self.steps[a].images_per_sec() / self.steps[b].images_per_sec()

    def train_gflops_per_sec(self, name: str) -> float:
        # backward costs about twice the forward pass: ~3x forward FLOPs per trained image
        return 3 * self.gflops_per_image * self.steps[name].images_per_sec()


class _Clock:
    def __init__(self, device):
        import torch

        self.device = device
        self._sync = {"cuda": lambda: torch.cuda.synchronize(device),
                      "mps": lambda: torch.mps.synchronize()}.get(device.type)

    def now(self) -> float:
        if self._sync is not None:
            self._sync()
        return time.perf_counter()


class _LastGrad:
    """When the last parameter gradient of a backward pass was accumulated.

    On CUDA a hook only sees the kernel launch, so it records an event on the stream instead,
    and the optimizer's share of the step is read off the device's own clock."""

    def __init__(self, model, clock: _Clock):
        import torch

        self.clock, self.at, self.recorded = clock, None, False
        self.event = torch.cuda.Event(enable_timing=True) if clock.device.type == "cuda" else None
        self._handles = [p.register_post_accumulate_grad_hook(self._hook)
                         for p in model.parameters() if p.requires_grad]

    def _hook(self, _param) -> None:
        if self.event is not None:
            self.event.record()
            self.recorded = True
        else:
            self.at = self.clock.now()

    def reset(self) -> None:
        self.at, self.recorded = None, False

    def close(self) -> None:
        for h in self._handles:
            h.remove()


class _Stepper:
    """The engine's training step (cnnlab.training.step.forward, then Precision.step) with marks
    between its phases."""

    def __init__(self, model, optimizer, precision, criterion, grad_clip: float, clock: _Clock):
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.criterion, self.grad_clip, self.clock = criterion, grad_clip, clock
        self.last = _LastGrad(model, clock)

    def __call__(self, batches: Callable) -> tuple[float, int, dict]:
        """One step on the next batch: (wall seconds, images, seconds per phase)."""
        import torch

        from cnnlab.training import step

        t0 = self.clock.now()
        x, y = batches()
        t_data = self.clock.now()
        _, loss = step.forward(self.model, x, y, self.criterion, self.precision)
        t_fwd = self.clock.now()
        self.optimizer.zero_grad(set_to_none=True)
        t_zero = self.clock.now()
        self.last.reset()
        self.precision.step(loss, self.optimizer, self.model, self.grad_clip)
        if self.last.event is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            t_end = self.clock.now()
            tail = self.last.event.elapsed_time(end) / 1000 if self.last.recorded else 0.0
        else:
            t_end = self.clock.now()
            tail = t_end - self.last.at if self.last.at is not None else 0.0
        phases = {"data": t_data - t0, "forward": t_fwd - t_data,
                  "backward": t_end - t_zero - tail, "optimizer": t_zero - t_fwd + tail}
        return self.clock.now() - t0, int(x.shape[0]), phases

    def close(self) -> None:
        self.last.close()


class _Epochs:
    """Batches across epoch ends, as training takes them: a new epoch when one runs out."""

    def __init__(self, make_iter: Callable[[int], Any], finish: Callable | None = None):
        self.make_iter, self.finish = make_iter, finish
        self.epoch, self.it = 0, iter(())

    def __call__(self):
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            self.it = self.make_iter(self.epoch)
            batch = next(self.it)
        return self.finish(*batch) if self.finish else batch

    def close(self) -> None:
        self.it = iter(())  # a DataLoader iterator shuts its workers down when dropped


def _infer(model, x, precision, clock: _Clock) -> float:
    import torch

    model.eval()
    try:
        with torch.inference_mode(), precision.autocast():
            t0 = clock.now()
            model(x)
            return clock.now() - t0
    finally:
        model.train()


# --------------------------------------------------------------------------- the DataLoader side

class PerImage:
    """A Dataset of (transformed uint8 CHW image, label) from an in-memory or streamed split."""

    def __init__(self, split, transform):
        self.images, self.dataset, self.labels = split.images, split.dataset, split.labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, i):
        image = self.images[i] if self.images is not None else self.dataset[i][0]
        return self.transform(image), self.labels[i]


class MixCollate:
    """default_collate, then a batch transform (v2.MixUp / v2.CutMix), as torchvision's
    classification reference script mixes batches."""

    def __init__(self, mix):
        self.mix = mix

    def __call__(self, batch):
        from torch.utils.data import default_collate

        return self.mix(*default_collate(batch))


def torchvision_transforms(aug, image_size, mean, std, num_classes: int):
    """The preset as torchvision v2 transforms: (per-image transform, batch mix or None,
    description, left-out ops)."""
    import torch
    from torchvision.transforms import v2

    h, w = int(image_size[0]), int(image_size[1])
    ops, names, left, mix = [], [], [], None
    for op in list(aug.ops):
        if op == "crop":
            size = int(aug.crop_size or 0)
            h, w = (size, size) if size else (h, w)
            ops.append(v2.RandomCrop((h, w), padding=int(aug.crop_padding)))
            names.append(f"RandomCrop({h}x{w}, padding={int(aug.crop_padding)})")
        elif op == "flip":
            ops.append(v2.RandomHorizontalFlip(float(aug.flip_p)))
            names.append(f"RandomHorizontalFlip({float(aug.flip_p):g})")
        elif op == "scale":
            scale, ratio = (aug.scale_min, aug.scale_max), (aug.ratio_min, aug.ratio_max)
            ops.append(v2.RandomResizedCrop((h, w), scale=scale, ratio=ratio, antialias=True))
            names.append(f"RandomResizedCrop({h}x{w})")
        elif op == "color":
            ops.append(v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast,
                                      saturation=aug.saturation))
            names.append("ColorJitter")
        elif op == "cutout":
            side = int(aug.cutout_size)
            area = min(1.0, side * side / (h * w))
            ops.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
            names.append(f"RandomErasing({side}x{side}, inside the image)")
        elif op in ("mixup", "cutmix") and mix is None:
            cls = v2.MixUp if op == "mixup" else v2.CutMix
            mix = cls(alpha=float(getattr(aug, f"{op}_alpha")), num_classes=num_classes)
            names.append(f"{cls.__name__} per batch (collate_fn)")
        else:  # pca lighting; a second mixing op (v2 mixes integer labels only)
            left.append(op)
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    names += ["ToDtype(float32)", "Normalize"]
    return v2.Compose(ops), mix, names, left


def _dataloader_batches(parts, cfg, workers: int, transform, mix) -> _Epochs:
    import torch
    from torch.utils.data import DataLoader

    dataset = PerImage(parts.bundle.train, transform)
    bs = cfg.trainer.batch_size
    loader = DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers,
                        drop_last=len(dataset) >= bs, pin_memory=parts.device.type == "cuda",
                        collate_fn=MixCollate(mix) if mix is not None else None,
                        generator=torch.Generator().manual_seed(cfg.seed))
    device, dtype, channels_last = parts.device, parts.precision.param_dtype, parts.channels_last

    def finish(x, y):
        x = x.to(device, non_blocking=True).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    return _Epochs(lambda _epoch: iter(loader), finish)


# --------------------------------------------------------------------------- the benchmark

def gflops_per_image(model, input_shape) -> float:
    """2 x MACs of one forward pass (cnnlab.models.profile on a meta-device copy); nan if the
    model cannot be traced."""
    import torch

    from cnnlab.models.profile import profile

    try:
        meta = copy.deepcopy(model).to(device="meta", dtype=torch.float32)
        return 2 * profile(meta, tuple(input_shape), device="meta").total_macs / 1e9
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # the meta tracer failed:
        # leave the figure out, not the benchmark
        return float("nan")


def check_args(steps: int, warmup: int, repeats: int, workers: int) -> None:
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if warmup < 0:
        raise UsageError(f"--warmup must be 0 or more, got {warmup}")
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}")
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}")


def _stepper(model, cfg, precision, clock: _Clock) -> _Stepper:
    """A stepper of `model` with its own optimizer, as `cnnlab train` builds them (the loss is the
    engine's: cnnlab.training.step)."""
    from cnnlab import transfer
    from cnnlab.training import optim, step

    optimizer = optim.build_optimizer(model, cfg.optim, lr_mult=transfer.lr_multipliers(model, cfg))
    return _Stepper(model, optimizer, precision, step.criterion(cfg.trainer.label_smoothing),
                    cfg.trainer.grad_clip, clock)


@dataclass
class _Pipelines:
    """What the benchmark steps: name -> a callable giving the next (x, y) batch."""
    batches: dict
    fixed: tuple  # made once by cnnlab's loader: augmented, normalised, on the device
    in_blocks: dict  # name -> extra warm-up steps: the batches its worker processes hold ready
    steppers: dict = field(default_factory=dict)  # name -> its own stepper (a twin model)
    transforms: list = field(default_factory=list)  # the DataLoader's, described
    left_out: list = field(default_factory=list)

    @property
    def lockstep(self) -> tuple:
        return tuple(name for name in self.batches if name not in self.in_blocks) + ("inference",)


def _pipelines(cfg, parts, vs_dataloader: bool, workers: int) -> _Pipelines:
    """cnnlab's loader, the ceiling's fixed batch and (vs_dataloader) torch's DataLoader."""
    from cnnlab.data.loader import InMemoryLoader

    loader = parts.train_loader

    def epoch_iter(epoch):
        loader.set_epoch(epoch)
        return iter(loader)

    cnnlab = _Epochs(epoch_iter)
    fixed = cnnlab()
    p = _Pipelines({"cnnlab": cnnlab, "ceiling": lambda: fixed}, fixed,
                   {} if isinstance(loader, InMemoryLoader) else {"cnnlab": 2 * cfg.data.workers})
    if p.in_blocks:
        cnnlab.close()  # its workers must not keep prefetching while the other pipelines run
    if vs_dataloader:
        transform, mix, p.transforms, p.left_out = torchvision_transforms(
            cfg.aug, parts.bundle.image_size, parts.bundle.mean, parts.bundle.std,
            parts.bundle.num_classes)
        p.batches["dataloader"] = _dataloader_batches(parts, cfg, workers, transform, mix)
        p.in_blocks["dataloader"] = 2 * workers
    return p


def _add_twin(p: _Pipelines, cfg, parts, clock: _Clock) -> None:
    """The ceiling's twin in the other memory order: a copy of the model, its own optimizer."""
    import torch

    name = OTHER_FORMAT[parts.channels_last]
    fmt = torch.contiguous_format if parts.channels_last else torch.channels_last
    twin = copy.deepcopy(parts.model).to(memory_format=fmt)
    twin_batch = (p.fixed[0].contiguous(memory_format=fmt), p.fixed[1])
    p.batches[name] = lambda: twin_batch
    p.steppers[name] = _stepper(twin, cfg, parts.precision, clock)


def run(cfg, steps: int = 96, warmup: int = 5, repeats: int = 3, vs_dataloader: bool = False,
        workers: int = 2, vs_memory_format: bool = False) -> Result:
    """Measure the pipelines of `cfg` (a composed train config); see the module docstring.

    vs_memory_format: also the ceiling in the other memory order (OTHER_FORMAT: NCHW when the
    run is channels_last, else NHWC), a copy of the model with its own optimizer stepping the
    fixed batch in that order, in lock step with the rest.
    steps: measured steps per pipeline in all, split over `repeats` rounds; warmup: unmeasured
    steps per pipeline at the start of each round (worker pipelines add one per batch their
    workers prefetch, so the measured steps do not start from a full queue)."""
    from cnnlab import transfer
    from cnnlab.training.recipe import build_parts

    check_args(steps, warmup, repeats, workers)
    if cfg.transfer.name in transfer.PROBES:
        raise UsageError(f"transfer={cfg.transfer.name} fits a probe on frozen features, not "
                         "gradient steps; bench-train measures training steps")
    parts = build_parts(cfg)
    clock = _Clock(parts.device)
    p = _pipelines(cfg, parts, vs_dataloader, workers)
    if vs_memory_format:
        _add_twin(p, cfg, parts, clock)
    stepper = _stepper(parts.model, cfg, parts.precision, clock)
    try:
        records, rounds = _measure(p, stepper, parts, clock, steps, warmup, repeats)
    finally:
        stepper.close()
        for s in p.steppers.values():
            s.close()
    return _result(p, records, rounds, parts, warmup, workers if vs_dataloader else None)


def _measure(p: _Pipelines, stepper: _Stepper, parts, clock: _Clock, steps: int, warmup: int,
             repeats: int) -> tuple[dict, int]:
    """Per-pipeline step records over `rounds` rounds: the lock-step pipelines side by side,
    then each worker pipeline in its block."""
    model = parts.model
    # every round starts from the same weights, so a run that diverges cannot drift the later
    # rounds' timings (nan arithmetic, a loss scaler skipping updates)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    records = {name: Steps() for name in (*p.batches, "inference")}
    rounds = min(repeats, steps)
    for r in range(rounds):
        n = steps // rounds + (r < steps % rounds)
        model.load_state_dict(initial)
        for s in p.steppers.values():
            s.model.load_state_dict(initial)
        for i in range(warmup + n):
            _lockstep_tick(p, stepper, parts.precision, clock, i, records if i >= warmup else None, r)
        for name, extra in p.in_blocks.items():
            model.load_state_dict(initial)
            try:
                for i in range(warmup + extra + n):
                    rec = stepper(p.batches[name])
                    if i >= warmup + extra:
                        records[name].add(*rec, r)
            finally:
                p.batches[name].close()
    ticks = [sum(t) for t in zip(*(records[name].seconds for name in p.lockstep))]
    for name in p.lockstep:
        records[name].rank = ticks
        records[name].block = getattr(parts.train_loader, "chunk", 1)
    return records, rounds


def tick_order(lockstep: tuple, i: int) -> list:
    """The order of lock-step tick `i`: the training pipelines in the (i mod m!)-th of their m!
    orders, then the inference pass.

    A step runs measurably faster or slower depending on what ran just before it: a forward
    pass right after the inference pass finds the weights and kernels warm (lenet5, one thread:
    about 6% faster than after a training step). Over m! ticks every training pipeline comes
    first (after the last tick's inference pass) equally often and right after each other one
    equally often, so all get the same mix. A plain rotation does not: in (cnnlab, ceiling,
    inference) cnnlab follows the inference pass in two ticks of three, the ceiling in one."""
    import itertools

    training = [name for name in lockstep if name != "inference"]
    orders = list(itertools.permutations(training))
    return [*orders[i % len(orders)], *(["inference"] if "inference" in lockstep else [])]


def _lockstep_tick(p: _Pipelines, stepper: _Stepper, precision, clock: _Clock, i: int,
                   records: dict | None, round_: int) -> None:
    """One step of every lock-step pipeline (and one inference pass); records None: warm-up."""
    for name in tick_order(p.lockstep, i):
        if name == "inference":
            rec = (_infer(stepper.model, p.fixed[0], precision, clock), int(p.fixed[0].shape[0]), None)
        else:
            rec = p.steppers.get(name, stepper)(p.batches[name])
        if records is not None:
            records[name].add(*rec, round_)


def _result(p: _Pipelines, records: dict, rounds: int, parts, warmup: int,
            workers: int | None) -> Result:
    import torch

    from cnnlab import models
    from cnnlab.machine import device_name
    from cnnlab.training.device import peak_memory_mb

    model, device = parts.model, parts.device
    c, (h, w) = parts.bundle.in_chans, parts.input_size
    return Result(
        steps=records, lockstep=p.lockstep, rounds=rounds,
        batch_size=int(p.fixed[0].shape[0]), params=models.count_params(model),
        gflops_per_image=gflops_per_image(model, (c, h, w)),
        peak_mem_mb=round(peak_memory_mb(device), 1), device=str(device),
        device_name=device_name(device),
        threads=torch.get_num_threads(), precision=parts.precision.name,
        channels_last=parts.channels_last, warmup=warmup,
        workers=workers, transforms=p.transforms, left_out=p.left_out,
        torch_version=torch.__version__)


def metric_rows(result: Result) -> list[tuple[str, dict]]:
    """(pipeline, metrics) pairs for the results table: one per measured training pipeline."""
    out = []
    has_dl = "dataloader" in result.steps
    for name in result.training:
        s = result.steps[name]
        out.append((name, {
            "bench_images_per_sec": round(s.images_per_sec(), 1),
            "bench_step_ms": round(s.ms(), 3),
            **{f"bench_{p}_ms": round(s.ms(p), 3) for p in PHASES},
            "bench_vs_ceiling": round(result.ratio(name, "ceiling"), 4),
            "bench_vs_dataloader": round(result.ratio(name, "dataloader"), 4) if has_dl else None,
            "bench_infer_images_per_sec": round(result.steps["inference"].images_per_sec(), 1),
            "bench_train_gflops_per_sec": round(result.train_gflops_per_sec(name), 2),
            "bench_steps": len(s.seconds), "bench_warmup": result.warmup,
            "bench_rounds": result.rounds, "bench_batch": result.batch_size,
            "bench_lockstep": name in result.lockstep,
            "bench_workers": result.workers if name == "dataloader" else None,
            "bench_transforms": "; ".join(result.transforms) if name == "dataloader" else None,
            "bench_left_out": ",".join(result.left_out) if name == "dataloader" else None,
            "params": result.params, "gflops_per_image": round(result.gflops_per_image, 6),
            "peak_mem_mb": result.peak_mem_mb, "torch": result.torch_version,
            "device": result.device, "device_name": result.device_name,
            "threads": result.threads, "channels_last": result.channels_last,
        }))
    return out
