"""`cnnlab export RUN --format safetensors`: a run's weights in a file meant for sharing.

safetensors holds tensors and a string-to-string header only; loading it never unpickles
anything, so a shared file cannot carry code (unlike a pickled .pt, which is safe only through
torch's weights_only loader). cnnlab loads it wherever it loads weights (cnnlab.checkpoint.load).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cnnlab import checkpoint
from cnnlab.errors import CnnlabError, UsageError, os_reason

FORMATS = ("safetensors",)


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
           out: str | os.PathLike | None = None) -> Path:
    """Write the run's weights as <run>/checkpoints/model.safetensors (or `out`); returns the path.

    The file is replaced atomically and created with the user's umask; a failed write (a full
    disk, a read-only folder) leaves no temporary file and any earlier export as it was."""
    from safetensors.torch import save as to_bytes

    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}'; choose from: {', '.join(FORMATS)}")
    if which not in ("best", "last"):
        raise UsageError(f"--which must be best or last, not '{which}'")
    src = weights_file(Path(run), which)
    state = checkpoint.load(src)
    model = state["model"]  # a checkpoint without one is an error naming it
    if not isinstance(model, dict) or not model:
        raise CnnlabError(f"{src}: checkpoint has no 'model' weights")
    if not checkpoint.all_finite(model):
        raise CnnlabError(f"{src} holds weights that are not finite; not exporting them")
    # one contiguous CPU copy per tensor: safetensors refuses views and shared storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.items()}
    data = to_bytes(tensors, metadata=_metadata(src, state))
    out = Path(out) if out else src.parent / "model.safetensors"
    try:
        checkpoint.write_atomic(out, lambda f: f.write(data))
    except OSError as exc:
        raise CnnlabError(f"cannot write {out}: {os_reason(exc)}") from exc
    return out


def _metadata(src: Path, state: dict) -> dict[str, str]:
    """The safetensors header's strings: where the weights came from, the run's config and the
    summary fields a loader needs (classes, input size, normalisation)."""
    folder = src.parent.parent if src.parent.name == "checkpoints" else src.parent
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
