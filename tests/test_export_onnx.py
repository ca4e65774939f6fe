"""`cnnlab export RUN --format onnx`: the run's network in eval mode at its input shape, with a
dynamic batch axis, the opset and class names in metadata_props; onnxruntime's outputs match
torch's within 1e-4 for a plain CNN, a residual one and one with batch norm and depthwise convs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cnnlab import checkpoint
from cnnlab.cli.main import app
from cnnlab.evaluation.runs import load_run
from cnnlab.export import ONNX_OPSET, export
from cnnlab.training.recipe import train
from tests.conftest import tiny

onnx = pytest.importorskip("onnx", reason="needs the onnx package (pip install 'cnnlab[onnx]')")
ort = pytest.importorskip("onnxruntime",
                          reason="needs onnxruntime (pip install 'cnnlab[test]' or onnxruntime)")

# small runs: lenet5 on digits (1 channel, 8x8), resnet8 on 3-channel shapes trained on 28x28
# crops of the 32x32 images (the export takes the crop's shape), and a thin MobileNetV2 (batch
# norm, depthwise 3x3 convs, ReLU6)
ARCHS = {
    "lenet5": ["data=digits", "model=lenet5", "data.num_train=200"],
    "resnet8": ["model=resnet8", "aug=crop", "aug.crop_size=28", "data.num_train=120",
                "data.num_test=40"],
    "mobilenet_v2": ["model=mobilenet_v2", "model.width=0.25", "model.stem=cifar",
                     "data.num_train=120", "data.num_test=40"],
}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _max_diff(run_dir, path, batch: int = 3) -> float:
    run = load_run(run_dir)
    c, h, w = json.loads(_props(path)["input_shape"])[1:]
    x = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = run.model(x).numpy()
    got = _session(path).run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape
    return float(abs(got - ref).max())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_onnx_matches_torch_within_1e_4(outputs, arch, capsys):
    s = train(tiny("trainer.epochs=1", *ARCHS[arch]))
    run_dir = outputs / "runs" / s["run_id"]
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert f"opset {ONNX_OPSET}" in result.output
    path = run_dir / "checkpoints" / "model.onnx"
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))
    if arch == "resnet8":
        assert json.loads(_props(path)["input_shape"]) == ["batch", 3, 28, 28]
    diff = _max_diff(run_dir, path)
    with capsys.disabled():
        print(f"\n{arch}: max |onnxruntime - torch| = {diff:.3g}")
    assert diff < 1e-4
    # the batch axis is dynamic: one image and five go through the same file
    for n in (1, 5):
        assert _max_diff(run_dir, path, batch=n) < 1e-4


def test_onnx_metadata_names_opset_classes_and_input(outputs):
    s = train(tiny("trainer.epochs=1", *ARCHS["lenet5"]))
    run_dir = outputs / "runs" / s["run_id"]
    path = export(run_dir, "onnx", rebuild=_rebuild())
    model = onnx.load(str(path))
    assert model.opset_import[0].version == ONNX_OPSET
    props = _props(path)
    assert props["opset"] == str(ONNX_OPSET)
    assert json.loads(props["class_names"]) == [str(i) for i in range(10)]
    assert json.loads(props["input_shape"]) == ["batch", 1, 8, 8]
    assert props["arch"] == "lenet5" and "lenet5" in props["config_yaml"]
    onnx.checker.check_model(model)


def test_onnx_which_last_and_out(outputs, tmp_path):
    s = train(tiny("trainer.epochs=2", *ARCHS["lenet5"]))
    run_dir = outputs / "runs" / s["run_id"]
    out = tmp_path / "elsewhere.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx", "--which",
                                      "last", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert _props(out)["source"] == "last.pt"
    assert not (run_dir / "checkpoints" / "model.onnx").exists()


def test_onnx_of_a_checkpoint_file_inside_its_run_folder(outputs):
    s = train(tiny("trainer.epochs=1", *ARCHS["lenet5"]))
    ckpt = outputs / "runs" / s["run_id"] / "checkpoints" / "best.pt"
    result = CliRunner().invoke(app, ["export", str(ckpt), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert (ckpt.parent / "model.onnx").is_file()


def test_onnx_of_a_lone_checkpoint_says_it_needs_the_run_folder(outputs, tmp_path):
    s = train(tiny("trainer.epochs=1", *ARCHS["lenet5"]))
    lone = tmp_path / "lone.pt"
    lone.write_bytes((outputs / "runs" / s["run_id"] / "checkpoints" / "best.pt").read_bytes())
    result = CliRunner().invoke(app, ["export", str(lone), "--format", "onnx"])
    assert result.exit_code == 2, result.output
    assert "config.yaml" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "model.onnx").exists()


def test_a_failed_onnx_write_keeps_the_earlier_file(outputs, monkeypatch):
    s = train(tiny("trainer.epochs=1", *ARCHS["lenet5"]))
    run_dir = outputs / "runs" / s["run_id"]
    path = export(run_dir, "onnx", rebuild=_rebuild())
    before = path.read_bytes()

    def full(f):
        raise OSError(28, "No space left on device")

    real = checkpoint.write_atomic
    monkeypatch.setattr(checkpoint, "write_atomic", lambda p, fill: real(p, full))
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 1 and "no space left on device" in result.output.lower()
    assert path.read_bytes() == before and not list(path.parent.glob(".*.tmp"))


def _rebuild():
    from cnnlab.evaluation.runs import model_for_export

    return model_for_export


def test_onnx_without_the_onnx_package_names_the_extra(outputs, monkeypatch):
    import sys

    s = train(tiny("trainer.epochs=1", *ARCHS["lenet5"]))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    result = CliRunner().invoke(app, ["export", s["path"], "--format", "onnx"])
    assert result.exit_code == 2 and "pip install 'cnnlab[onnx]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
