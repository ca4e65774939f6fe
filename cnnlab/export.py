"""`cnnlab export RUN --format safetensors|onnx`: a run's weights in a file meant for sharing.

safetensors holds tensors and a string-to-string header only; loading it never unpickles
anything, so a shared file cannot carry code (unlike a pickled .pt, which is safe only through
torch's weights_only loader). cnnlab loads it wherever it loads weights (cnnlab.checkpoint.load).

ONNX (`--format onnx`, the `onnx` extra) holds the network itself, traced in eval mode at the
run's input shape with a dynamic batch axis, for runtimes without PyTorch (onnxruntime). It goes
through torch's TorchScript exporter (`dynamo=False`): that exporter needs torch alone, while the
default torch.export-based one also needs onnxscript; `onnx` only adds the metadata_props
(opset, class names, input shape, normalisation, the run's summary fields). Rebuilding a network
needs the model and data registries, a layer above this module, so the caller passes `rebuild`
(cnnlab.evaluation.runs.model_for_export).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable

from cnnlab import checkpoint
from cnnlab.errors import CnnlabError, UsageError, os_reason

FORMATS = ("safetensors", "onnx")
SUFFIXES = {"safetensors": ".safetensors", "onnx": ".onnx"}
# ONNX opset 17 (2022): LayerNormalization and every op cnnlab's models trace to; onnxruntime
# has run it since 1.14, and it is the newest opset torch's TorchScript exporter targets fully
ONNX_OPSET = 17


def weights_file(run: Path, which: str = "best") -> Path:
    """The checkpoint of a run folder to export: best.pt (else last.pt), or last.pt."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise UsageError(f"{run} is neither a run folder nor a checkpoint file")
    names = ("best.pt", "last.pt") if which == "best" else ("last.pt",)
    for name in names:
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise CnnlabError(f"{run} has no checkpoints/{' or '.join(names)}")


def export(run: str | os.PathLike, fmt: str = "safetensors", which: str = "best",
           out: str | os.PathLike | None = None,
           rebuild: Callable[[Path, Path], dict] | None = None) -> Path:
    """Write the run's weights as <run>/checkpoints/model.safetensors or model.onnx (or `out`);
    returns the path.

    fmt "onnx" needs `rebuild(run_folder, weights) -> {"model", "input_shape", ...}`
    (cnnlab.evaluation.runs.model_for_export). The file is replaced atomically and created with
    the user's umask; a failed write (a full disk, a read-only folder) leaves no temporary file
    and any earlier export as it was."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}'; choose from: {', '.join(FORMATS)}")
    if which not in ("best", "last"):
        raise UsageError(f"--which must be best or last, not '{which}'")
    src = weights_file(Path(run), which)
    if fmt == "onnx" and rebuild is None:
        raise UsageError("ONNX export rebuilds the run's network: pass rebuild "
                         "(cnnlab.evaluation.runs.model_for_export)")
    state = checkpoint.load(src)
    model = state["model"]  # a checkpoint without one is an error naming it
    if not isinstance(model, dict) or not model:
        raise CnnlabError(f"{src}: checkpoint has no 'model' weights")
    if not checkpoint.all_finite(model):
        raise CnnlabError(f"{src} holds weights that are not finite; not exporting them")
    meta = _metadata(src, state)
    out = Path(out) if out else src.parent / f"model{SUFFIXES[fmt]}"
    if fmt == "onnx":
        data = _onnx_bytes(rebuild, src, meta)
    else:
        from safetensors.torch import save as to_bytes

        # one contiguous CPU copy per tensor: safetensors refuses views and shared storage
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.items()}
        data = to_bytes(tensors, metadata=meta)
    try:
        checkpoint.write_atomic(out, lambda f: f.write(data))
    except OSError as exc:
        raise CnnlabError(f"cannot write {out}: {os_reason(exc)}") from exc
    return out


def run_folder(src: Path) -> Path:
    """The run folder a checkpoint file belongs to (<run>/checkpoints/x.pt -> <run>)."""
    return src.parent.parent if src.parent.name == "checkpoints" else src.parent


def _onnx_bytes(rebuild: Callable[[Path, Path], dict], src: Path, meta: dict[str, str]) -> bytes:
    """The run's network as an ONNX model (bytes) with cnnlab's metadata_props."""
    try:
        import onnx
    except ImportError:
        raise UsageError("ONNX export needs the onnx package: pip install 'cnnlab[onnx]' "
                         "(or pip install onnx)") from None
    import torch

    folder = run_folder(src)
    if not (folder / "config.yaml").is_file():
        raise UsageError(f"{src}: ONNX export rebuilds the network from its run folder's "
                         f"config.yaml, and {folder} has none; give the run folder")
    spec = rebuild(folder, src)
    net = spec["model"].cpu().eval()
    example = torch.zeros(2, *spec["input_shape"])  # batch 2: a traced batch of 1 may specialise
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:  # an op the exporter cannot express at this opset
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CnnlabError(f"{src}: {spec.get('arch', 'the model')} cannot be exported to "
                              f"ONNX opset {ONNX_OPSET}: {line}") from None
    proto = onnx.load_from_string(buf.getvalue())
    props = {**{k: v for k, v in meta.items() if k != "format"}, "opset": str(ONNX_OPSET), "producer": "cnnlab",
             "input_shape": json.dumps(["batch", *spec["input_shape"]])}
    for key in ("class_names", "mean", "std", "arch"):
        if spec.get(key) is not None:
            props[key] = spec[key] if isinstance(spec[key], str) else json.dumps(spec[key])
    onnx.helper.set_model_props(proto, props)
    return proto.SerializeToString()


def _metadata(src: Path, state: dict) -> dict[str, str]:
    """The safetensors header's strings: where the weights came from, the run's config and the
    summary fields a loader needs (classes, input size, normalisation)."""
    folder = run_folder(src)
    meta = {"source": src.name, "epoch": str(state.get("epoch", "")), "format": "pt"}
    if (folder / "config.yaml").is_file():
        meta["config_yaml"] = (folder / "config.yaml").read_text(encoding="utf-8", errors="replace")
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CnnlabError(f"{folder / 'summary.json'}: not valid JSON ({exc}); repair or "
                              f"remove it to export") from None
        if isinstance(summary, dict):
            meta["summary"] = json.dumps({k: summary.get(k) for k in (
                "run_id", "num_classes", "in_chans", "input_size", "data_mean", "data_std",
                "test_acc")})
    return meta
