"""`cnnlab eval RUN_DIR`: test-time views (centre, ten-crop, multi-scale) of a finished run.

Always evaluates `center`, plus `tencrop` and/or `multiscale` when asked; prints one table row
per mode and appends one row per mode to outputs/results.csv ($CNNLAB_OUTPUTS or ./outputs, or
--outputs). The crop rule is cnnlab.evaluation.views': the crop is the run's training input size (the whole
image, or aug.crop_size when it trained on random crops), cut from the stored image up to 64 px
and after resizing the shorter side to crop / 0.875 above.

Results rows: head run_id (the run folder's name, so a row joins its training row), time,
status "eval", eval_mode; the run's config with eval.name/eval.views set to the mode (so the
`eval` axis pivots); the metrics prefixed eval_: eval_top1, eval_top5, eval_nll, eval_views,
eval_ms_per_image, eval_n, eval_crop, eval_scales, eval_average, eval_split. They are not
named test_acc etc. because they are not always the training row's numbers: --crop may differ
from the training size, and the split may be val.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnlab.cli.app import app, guarded


def _load(run_dir: Path, device):
    """ensemble.load_run with its failures as one-line cnnlab errors."""
    from cnnlab.errors import CnnlabError

    if not run_dir.exists():
        raise CnnlabError(f"no run folder at {run_dir}")
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir} is a file; give the run folder (outputs/runs/<id>)")
    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir} is not a cnnlab run folder (no config.yaml)")
    ckpts = run_dir / "checkpoints"
    if not ((ckpts / "best.pt").is_file() or (ckpts / "last.pt").is_file()):
        raise CnnlabError(f"{run_dir} has no checkpoint (checkpoints/best.pt or last.pt)")
    from cnnlab.evaluation.ensemble import load_run

    try:
        return load_run(run_dir, device)
    except CnnlabError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise CnnlabError(f"{run_dir} is not a cnnlab run: its checkpoint or config.yaml lacks "
                          f"what cnnlab writes ({type(exc).__name__}: {exc})") from None
    except RuntimeError as exc:  # load_state_dict: missing or misshapen weights
        line = str(exc).strip().splitlines()[0]
        raise CnnlabError(f"the checkpoint in {run_dir} does not fit its config's model: {line}") from None
    except Exception as exc:  # omegaconf validation of a foreign config.yaml
        if type(exc).__module__.startswith("omegaconf"):
            line = str(exc).strip().splitlines()[0]
            raise CnnlabError(f"{run_dir}/config.yaml is not a cnnlab config: {line}") from None
        raise


@app.command("eval")
@guarded
def eval_run(
    run_dir: Path = typer.Argument(..., help="A run folder (outputs/runs/<id>)."),
    tencrop: bool = typer.Option(False, "--tencrop", help="Also the ten-crop views (corners, centre, mirrored)."),
    multiscale: Optional[str] = typer.Option(None, "--multiscale", help="Also ten crops at each of these scales, e.g. 28,32,40."),
    average: str = typer.Option("softmax", "--average", help="Average views as softmax or logits."),
    crop: Optional[int] = typer.Option(None, "--crop", help="View side (default: the run's training input size, aug.crop_size or the image)."),
    split: str = typer.Option("test", "--split", help="test or val."),
    chunk: Optional[int] = typer.Option(None, "--chunk", help="At most this many views per forward pass (default: trainer.eval_batch_size)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N, mps (default: the run's trainer.device)."),
    bench: bool = typer.Option(False, "--bench", help="Only time ten-crop against centre on one batch and print the ratio."),
    outputs: Optional[Path] = typer.Option(None, "--outputs", help="Where results.csv is (default: $CNNLAB_OUTPUTS or ./outputs)."),
):
    """Evaluate a finished run with test-time views; prints a table and appends rows to results.csv."""
    import time

    from rich.console import Console
    from rich.table import Table

    from cnnlab.errors import UsageError
    from cnnlab.tables import fmt

    if average not in ("softmax", "logits"):
        raise UsageError(f"unknown --average '{average}'; choose softmax or logits")
    if split not in ("test", "val"):
        raise UsageError(f"unknown --split '{split}'; choose test or val")
    if chunk is not None and chunk < 1:
        raise UsageError("--chunk must be at least 1")
    from cnnlab.evaluation import views as vw

    scales = vw.parse_scales(multiscale)
    if multiscale is not None and not scales:
        raise UsageError("--multiscale takes comma-separated sizes like 28,32,40")

    from omegaconf import OmegaConf

    from cnnlab import results
    from cnnlab.data import augment
    from cnnlab.data.loader import make_loader
    from cnnlab.evaluation.evaluate import bench_views, predict_views
    from cnnlab.training.device import resolve_device

    # the device is resolved from the stored config after loading; load on the CPU first
    cfg, model, bundle = _load(run_dir, "cpu")
    dev = resolve_device(device or cfg.trainer.device)
    model = model.to(dev)
    data = getattr(bundle, split)
    if len(data) == 0:
        raise UsageError(f"run {run_dir.name} has no {split} images (data.val_fraction=0?)")
    trained = min(augment.input_size(cfg.aug, bundle.image_size))
    chosen, resize = vw.geometry(bundle.image_size, crop if crop is not None else trained)
    console = Console()
    if crop is not None and not _accepts(model, bundle.in_chans, chosen, dev):
        raise UsageError(f"{cfg.model.name} cannot take {chosen}x{chosen} inputs (it trained on "
                         f"{trained}x{trained}); choose another --crop")
    if (tencrop or scales) and resize is None and chosen == min(bundle.image_size):
        console.print(f"note: the crop is the whole {chosen}x{chosen} image, so the ten crops are "
                      "the image and its mirror; train with aug.crop_size (e.g. "
                      f"{chosen - 4}) or pass --crop for distinct crops")
    loader = make_loader(data, cfg.trainer.eval_batch_size, train=False, bundle=bundle, device=dev,
                         seed=0, workers=cfg.data.workers)

    if bench:
        x, _ = next(iter(loader))
        b = bench_views(model, x, chosen, chunk=chunk, resize=resize)
        console.print(f"ten-crop / centre time per image: {b['ratio']:.2f}x (target <= 11x); "
                      f"fastest rounds {b['ratio_min']:.2f}x; centre {b['center_ms']:.3f} ms/image, "
                      f"ten-crop {b['tencrop_ms']:.3f} ms/image "
                      f"({cfg.model.name}, batch {x.shape[0]}, {chosen}x{chosen}, {dev})")
        return

    modes = ["center"] + (["tencrop"] if tencrop else []) + (["multiscale"] if scales else [])
    from cnnlab.run import outputs_dir

    folder = outputs_dir(outputs)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    table = Table(title=f"eval {run_dir.name} ({cfg.model.name} on {bundle.name} {split}, "
                        f"crop {chosen}, {average} average)", header_style="bold")
    for col in ("mode", "views/image", "top1", "top5", "nll", "ms/image"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for mode in modes:
        m = predict_views(model, loader, mode, chosen, scales if mode == "multiscale" else (),
                          average=average, chunk=chunk, resize=resize)
        label = f"multiscale {','.join(map(str, scales))}" if mode == "multiscale" else mode
        table.add_row(label, str(m["views"]), fmt(m["top1"]), fmt(m["top5"]), fmt(m["nll"]),
                      f"{m['ms_per_image']:.3f}")
        metrics = {
            "eval_top1": m["top1"], "eval_top5": m["top5"], "eval_nll": m["nll"],
            "eval_views": m["views"], "eval_ms_per_image": round(m["ms_per_image"], 4),
            "eval_n": m["n"], "eval_crop": chosen,
            "eval_scales": ",".join(map(str, scales)) if mode == "multiscale" else "",
            "eval_average": average, "eval_split": split,
        }
        row_cfg = dict(cfg_dict, eval={**cfg_dict.get("eval", {}), "name": mode, "views": mode})
        head = {"run_id": run_dir.name, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "status": "eval", "eval_mode": mode}
        results.append_row(folder, results.make_row(row_cfg, head, metrics))
    console.print(table)
    console.print(f"appended {len(modes)} row(s) to {results.table_path(folder)}")


def _accepts(model, in_chans: int, crop: int, device) -> bool:
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
