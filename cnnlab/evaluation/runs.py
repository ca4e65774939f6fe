"""A finished run folder, loaded and scored under test-time views.

`load_run` rebuilds a run's model from its folder alone: config.yaml (data, model, aug; for a
transfer run the source's architecture, resolved when it started) and its weights,
checkpoints/best.pt, else last.pt, else model.safetensors (what `cnnlab export` leaves), loaded
with weights_only=True. `score_views` tests it under view modes ("center", "tencrop",
"multiscale:28,32,36") at the side the run trained on, under cnnlab.evaluation.views' crop rule.
`cnnlab eval`, ensembles and the sweep report's views all go through these two.

`evaluate_run` is `cnnlab eval`'s whole job for one eval config (the `eval` group: views,
average, crop, split, chunk): load, score every mode, append one results row per mode.
`bench_run` is its --bench: ten-crop time over centre time on one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from cnnlab.errors import CnnlabError, UsageError

WEIGHTS = ("best.pt", "last.pt", "model.safetensors")  # in order of preference
AVERAGES = ("softmax", "logits")
SPLITS = ("test", "val")


class LoadedRun(NamedTuple):
    """A run rebuilt from its folder; unpacks as (cfg, model, bundle)."""

    cfg: Any
    model: Any
    bundle: Any


def load_run(run_dir: str | Path, device: Any = "cpu", weights: Optional[Path] = None) -> LoadedRun:
    """(config, model with the run's weights in eval mode on `device`, data bundle) of a finished
    run folder; `weights`: a checkpoint to load instead of weights_file's choice. A folder that
    is not a cnnlab run is a one-line CnnlabError, never a traceback."""
    run_dir = Path(run_dir)
    weights = Path(weights) if weights is not None else weights_file(run_dir)
    try:
        cfg, model, bundle = _rebuild(run_dir, weights)
    except CnnlabError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise CnnlabError(f"{run_dir} is not a cnnlab run: its checkpoint or config.yaml lacks "
                          f"what cnnlab writes ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # omegaconf validation of a foreign config.yaml
        if type(exc).__module__.startswith("omegaconf"):
            line = str(exc).strip().splitlines()[0]
            raise CnnlabError(f"{run_dir}/config.yaml is not a cnnlab config: {line}") from None
        raise
    return LoadedRun(cfg, model.to(device).eval(), bundle)


def weights_file(run_dir: Path) -> Path:
    """The file load_run takes the weights from; a one-line CnnlabError when there is none."""
    if not run_dir.exists():
        raise CnnlabError(f"no run folder at {run_dir}")
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir} is a file; give the run folder (outputs/runs/<id>)")
    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir} is not a cnnlab run folder (no config.yaml)")
    for name in WEIGHTS:
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise CnnlabError(f"{run_dir} has no checkpoint (checkpoints/{', '.join(WEIGHTS)})")


def _rebuild(run_dir: Path, weights: Path):
    """(cfg, model with the weights, bundle), built the way the run built them."""
    from cnnlab import checkpoint, data, models
    from cnnlab.config import load_config
    from cnnlab.data import augment

    cfg = load_config(run_dir / "config.yaml")  # renamed keys of an earlier version migrated
    bundle = data.create(cfg.data)
    if cfg.transfer.resolved:  # a transfer run: the source's network behind an input adapter
        from cnnlab import transfer

        model = transfer.build(cfg, bundle, load_weights=False)
    else:
        opts = {k: v for k, v in cfg.model.items() if k != "name"}
        model = models.create(cfg.model.name, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                              input_size=augment.input_size(cfg.aug, bundle.image_size), **opts)
    # a file without weights, or weights of another model: one line naming the file and keys
    checkpoint.fit_weights(model, checkpoint.load(weights)["model"], weights, cfg.model.name)
    return cfg, model, bundle


def model_for_export(run_dir: Path, weights: Path) -> dict[str, Any]:
    """What cnnlab.export needs to trace a run's network: the model with `weights` in eval mode
    on the CPU, its input shape (channels, height, width) and the class names and normalisation
    a user of the exported file needs."""
    from cnnlab.data import augment

    run = load_run(run_dir, "cpu", weights)
    h, w = augment.input_size(run.cfg.aug, run.bundle.image_size)
    return {"model": run.model, "input_shape": (run.bundle.in_chans, h, w),
            "class_names": list(run.bundle.class_names), "mean": list(run.bundle.mean),
            "std": list(run.bundle.std), "arch": run.cfg.model.name}


def trained_side(run: LoadedRun) -> int:
    """The side the run's model trained on: aug.crop_size, or the stored image's shorter side."""
    from cnnlab.data import augment

    return min(augment.input_size(run.cfg.aug, run.bundle.image_size))


def view_geometry(run: LoadedRun, crop: Optional[int] = None) -> tuple[int, Optional[int]]:
    """(crop, resize) of the run's views: `crop` (None: the side it trained on) under the crop
    rule of cnnlab.evaluation.views, which also says whether images are resized first."""
    from cnnlab.evaluation import views as vw

    return vw.geometry(run.bundle.image_size, trained_side(run) if crop is None else crop)


def split_loader(run: LoadedRun, split: str = "test"):
    """The run's `split` (test or val) in order, in trainer.eval_batch_size batches on the
    model's device."""
    if split not in SPLITS:
        raise UsageError(f"unknown --split / eval.split '{split}'; choose test or val")
    from cnnlab.data.loader import make_loader

    return make_loader(_split_images(run, split), run.cfg.trainer.eval_batch_size, train=False,
                       bundle=run.bundle, device=_device_of(run.model), seed=0,
                       workers=run.cfg.data.workers)


def _split_images(run: LoadedRun, split: str):
    images = getattr(run.bundle, split)
    if len(images) == 0:
        raise UsageError(f"the run has no {split} images (data.val_fraction=0?)")
    return images


def _device_of(model):
    import itertools

    import torch

    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def score_views(run: LoadedRun, modes=("center",), *, split: str = "test",
                crop: Optional[int] = None, average: str = "softmax", chunk: Optional[int] = None,
                keep: bool = False) -> dict[str, dict]:
    """The run's `split` under each view mode, one after another on one loader (so their costs
    compare): mode -> predict_views' metrics (top1, top5, nll, views, ms_per_image, n, seconds,
    crop; probs and labels with keep=True) plus `mode` (its name) and `scales`.

    modes: whole modes, e.g. ["center", "tencrop", "multiscale:28,32"] (views.parse_views turns
    eval.views into these); crop: the view side (None: the side the run trained on)."""
    from cnnlab.evaluation import views as vw
    from cnnlab.evaluation.evaluate import predict_views

    side, resize = view_geometry(run, crop)
    loader = split_loader(run, split)
    out = {}
    for mode in [modes] if isinstance(modes, str) else modes:
        name, scales = vw.split_mode(vw.parse_views(mode)[0])
        m = predict_views(run.model, loader, name, side, scales, average=average, chunk=chunk,
                          resize=resize, keep=keep)
        out[mode] = {**m, "mode": name, "scales": scales}
    return out


def check_eval(ecfg) -> Any:
    """The eval config (an EvalConfig, cfg.eval or a dict) typed, with views as a list of whole
    modes; a one-line UsageError for a bad value."""
    from omegaconf import OmegaConf

    from cnnlab.config import EvalConfig
    from cnnlab.evaluation import views as vw

    ecfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), ecfg)
    ecfg.views = vw.parse_views(ecfg.views)
    if ecfg.average not in AVERAGES:
        raise UsageError(f"unknown --average / eval.average '{ecfg.average}'; choose softmax or logits")
    if ecfg.split not in SPLITS:
        raise UsageError(f"unknown --split / eval.split '{ecfg.split}'; choose test or val")
    if ecfg.chunk is not None and ecfg.chunk < 1:
        raise UsageError("--chunk / eval.chunk must be at least 1")
    return ecfg


@dataclass
class RunEval:
    """What `cnnlab eval` did: the scores per mode (score_views'), where it wrote their rows, a
    note on views that coincide, and a warning when mirrored views test a run that never trained
    on mirrored images (views.mirror_warning)."""

    run_id: str
    model: str
    data: str
    split: str
    crop: int
    average: str
    scores: dict
    rows: list = field(default_factory=list)
    table: Optional[Path] = None
    note: Optional[str] = None
    warning: Optional[str] = None


def evaluate_run(run_dir: str | Path, ecfg, *, device: Optional[str] = None,
                 resolve_device: Optional[Callable] = None,
                 outputs: Optional[str | Path] = None) -> RunEval:
    """`cnnlab eval`: the run scored under every mode of ecfg.views, one results row per mode
    appended to outputs/results.csv (see `result_rows`).

    ecfg: the eval group (check_eval reads it); device: a device name (None: the run's
    trainer.accelerator), turned into a torch.device by `resolve_device` (the caller's; None:
    torch.device)."""
    from cnnlab import results
    from cnnlab.evaluation import views as vw
    from cnnlab.run import outputs_dir

    ecfg = check_eval(ecfg)
    folder = results.check_writable(outputs_dir(outputs)).parent  # before the work, not after it
    run, side, _, note = _prepare(Path(run_dir), ecfg, device, resolve_device)
    scores = score_views(run, list(ecfg.views), split=ecfg.split, crop=side, average=ecfg.average,
                         chunk=ecfg.chunk)
    # the run's own id in the table (a sweep job's <sweep>/<job>), so eval rows join its row
    run_id = results.run_identity(folder, run_dir, Path(run_dir).name)["run_id"]
    rows = result_rows(run_id, run.cfg, ecfg, scores)
    for row in rows:
        results.append_row(folder, row)
    return RunEval(run_id=run_id, model=run.cfg.model.name, data=run.bundle.name,
                   split=ecfg.split, crop=side, average=ecfg.average, scores=scores, rows=rows,
                   table=results.table_path(folder), note=note,
                   warning=vw.mirror_warning(run.cfg.aug, list(ecfg.views)))


def bench_run(run_dir: str | Path, ecfg, *, device: Optional[str] = None,
              resolve_device: Optional[Callable] = None) -> dict[str, Any]:
    """`cnnlab eval --bench`: evaluate.bench_views on the first batch of the run's split, at
    the eval config's crop and chunk; its figures plus model, batch, crop and device."""
    from cnnlab.evaluation.evaluate import bench_views

    ecfg = check_eval(ecfg)
    run, side, resize, _ = _prepare(Path(run_dir), ecfg, device, resolve_device)
    x, _ = next(iter(split_loader(run, ecfg.split)))
    b = bench_views(run.model, x, side, chunk=ecfg.chunk, resize=resize)
    return {**b, "model": run.cfg.model.name, "batch": x.shape[0], "crop": side,
            "device": str(x.device)}


def _prepare(run_dir: Path, ecfg, device, resolve_device):
    """(run on its device, view side, resize, note): the run loaded on the CPU, moved to the device its
    config (or `device`) names, its crop checked against the model."""
    import torch

    from cnnlab.evaluation import views as vw

    run = load_run(run_dir, "cpu")  # the device comes from the stored config: load first
    dev = (resolve_device or torch.device)(device or run.cfg.trainer.accelerator)
    run = run._replace(model=run.model.to(dev))
    _split_images(run, ecfg.split)  # an empty split fails before any other work
    side, resize = view_geometry(run, ecfg.crop)
    trained = trained_side(run)
    if ecfg.crop is not None and not accepts(run.model, run.bundle.in_chans, side, dev):
        raise UsageError(f"{run.cfg.model.name} cannot take {side}x{side} inputs (it trained on "
                         f"{trained}x{trained}); choose another --crop")
    note = None
    if any(m != "center" for m in ecfg.views) and resize is None and side == min(run.bundle.image_size):
        what = ("the ten crops are the image and its mirror" if vw.mirroring(ecfg.views)
                else "the five crops are the image itself")
        note = (f"the crop is the whole {side}x{side} image, so {what}; train with aug.crop_size "
                f"(e.g. {side - 4}) or pass --crop for distinct crops")
    return run, side, resize, note


def accepts(model, in_chans: int, crop: int, device) -> bool:
    """Whether the model runs on a crop x crop input (one probe image)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, in_chans, crop, crop, device=device))
        return True
    except RuntimeError:
        return False
    finally:
        model.train(was_training)


def result_rows(run_id: str, cfg, ecfg, scores: dict[str, dict]) -> list[dict]:
    """One results row per mode: head run_id (joins the run's training row), time, status
    "eval", eval_mode; the run's config with its eval group replaced by the one used, its name
    and views set to the mode (so the `eval` axis pivots); the metrics prefixed eval_."""
    from omegaconf import OmegaConf

    from cnnlab import results

    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    used = OmegaConf.to_container(ecfg, resolve=True)
    rows = []
    for m in scores.values():
        metrics = {
            "eval_top1": m["top1"], "eval_top5": m["top5"], "eval_nll": m["nll"],
            "eval_views": m["views"], "eval_ms_per_image": round(m["ms_per_image"], 4),
            "eval_n": m["n"], "eval_crop": m["crop"], "eval_scales": ",".join(map(str, m["scales"])),
            "eval_average": ecfg.average, "eval_split": ecfg.split,
        }
        row_cfg = dict(cfg_dict, eval={**used, "name": m["mode"], "views": m["mode"]})
        head = {"run_id": run_id, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "status": "eval",
                "eval_mode": m["mode"]}
        rows.append(results.make_row(row_cfg, head, metrics))
    return rows
