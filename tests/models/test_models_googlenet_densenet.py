"""GoogLeNet (Inception v1) and DenseNet-121: parameter counts against torchvision, the papers'
own numbers by hand arithmetic, small forward/backward passes and the family options."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnlab import models
from cnnlab.errors import UsageError
from cnnlab.models.googlenet import INCEPTION_CFG, GoogLeNetOutputs, Inception


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine is shared; one thread avoids oversubscription on these small passes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def meta(name, **opts):
    with torch.device("meta"):
        return models.create(name, 1000, 3, **opts)


def meta_block(name, bottleneck):
    with torch.device("meta"):
        return models.create(name, 0, 192, bottleneck=bottleneck)


def conv_macs(model: nn.Module, shape=(1, 3, 224, 224)) -> dict[str, int]:
    """Multiply-accumulates of every conv and linear layer, by forward hooks on a meta tensor."""
    macs: dict[str, int] = {}

    def hook(name):
        def record(m, inputs, out):
            per_output = (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                          if isinstance(m, nn.Conv2d) else m.in_features)
            macs[name] = out[0].numel() * per_output  # one sample of the batch

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.empty(shape, device="meta"))
    for h in handles:
        h.remove()
    return macs


def per_top_module(macs: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, v in macs.items():
        top = name.split(".")[0]
        out[top] = out.get(top, 0) + v
    return out


def fwd_bwd(model, size, classes=10):
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- GoogLeNet


@pytest.mark.parametrize("aux", [False, True])
def test_googlenet_matches_torchvision_parameter_count(aux):
    with torch.device("meta"):
        tv = torchvision.models.googlenet(weights=None, aux_logits=aux, init_weights=False)
    ours = meta("googlenet", aux=aux, variant="torchvision")
    assert models.count_params(ours) == models.count_params(tv)
    assert models.count_params(ours) == (13004888 if aux else 6624904)
    # the paper's 5x5 branch instead of torchvision's 3x3 (pytorch/vision#906): 16 more
    # weights per (5x5 reduce, 5x5) channel pair in every module
    extra = sum(c5r * c5 * (25 - 9) for (_, _, _, c5r, c5, _) in INCEPTION_CFG.values())
    assert models.count_params(meta("googlenet", aux=aux)) == models.count_params(tv) + extra


def test_googlenet_compute_matches_paper_table1_and_torchvision():
    per = per_top_module(conv_macs(meta("googlenet").eval()))
    # Szegedy et al. 2015, Table 1, "ops" column (millions)
    table1 = {"inception3a": 128, "inception3b": 304, "inception4a": 73, "inception4b": 88,
              "inception4c": 100, "inception4d": 119, "inception4e": 170, "inception5b": 71,
              "stem": 118 + 360, "head": 1}
    for name, ops in table1.items():
        assert abs(per[name] / 1e6 - ops) < 1, name
    # 5a: Table 1 says 54M, but its own channel counts give 7*7*1042432 = 51.1M (the table also
    # lists 1072K parameters for 5a where the counts give 1042K), so check the arithmetic
    assert per["inception5a"] == 7 * 7 * (832 * 256 + 832 * 160 + 160 * 320 * 9 + 832 * 32
                                          + 32 * 128 * 25 + 832 * 128)
    # 3a by hand on its 28x28x192 input
    assert per["inception3a"] == 28 * 28 * (192 * 64 + 192 * 96 + 96 * 128 * 9 + 192 * 16
                                            + 16 * 32 * 25 + 192 * 32) == 128_049_152
    # torchvision's googlenet reports 1.498 GMACs ("_ops") for its 3x3 variant
    tv = sum(conv_macs(meta("googlenet", variant="torchvision").eval()).values())
    assert round(tv / 1e9, 3) == 1.498


def test_inception_module_naive_vs_bottleneck_by_hand():
    hw = 28 * 28
    with torch.device("meta"):
        # module 3a of Table 1 on its 28x28x192 input, with and without the 1x1 reductions
        a3 = Inception(192, *INCEPTION_CFG["3a"], bottleneck=True)
        a3_naive = Inception(192, *INCEPTION_CFG["3a"], bottleneck=False)
        # the common lecture example (Stanford CS231n, not the paper): 28x28x256 input,
        # 1x1 128, 3x3 192, 5x5 96, all reductions and the pool projection 64
        ex = Inception(256, 128, 64, 192, 64, 96, 64, bottleneck=True)
        ex_naive = Inception(256, 128, 64, 192, 64, 96, 64, bottleneck=False)
    shape3a, shape_ex = (1, 192, 28, 28), (1, 256, 28, 28)
    assert sum(conv_macs(a3, shape3a).values()) == 128_049_152
    assert sum(conv_macs(a3_naive, shape3a).values()) == hw * 192 * (64 + 128 * 9 + 32 * 25)
    assert a3.out_channels == 256 and a3_naive.out_channels == 64 + 128 + 32 + 192
    naive = sum(conv_macs(ex_naive, shape_ex).values())
    assert naive == hw * 256 * (128 + 192 * 9 + 96 * 25) == 854_196_224  # "854M ops"
    assert ex_naive.out_channels == 128 + 192 + 96 + 256  # Figure 2a: grows by the input
    bott = sum(conv_macs(ex, shape_ex).values())
    # the lecture quotes 358M but its own six terms sum to 271M
    assert bott == hw * (256 * 128 + 256 * 64 + 64 * 192 * 9 + 256 * 64 + 64 * 96 * 25
                         + 256 * 64) == 271_351_808
    assert naive > 3 * bott
    out = ex_naive(torch.empty(shape_ex, device="meta"))
    assert out.shape == (1, 672, 28, 28)
    # the same module 3a is registered as a block for `cnnlab models show inception`
    entry = models.list_models()["inception"]
    assert entry.kind == "block" and entry.default_input == (192, 28, 28)
    for bottleneck, expected in ((True, 128_049_152), (False, hw * 192 * (64 + 128 * 9 + 32 * 25))):
        block = meta_block("inception", bottleneck)
        assert sum(conv_macs(block, shape3a).values()) == expected


def test_googlenet_naive_modules_cost_several_times_more():
    paper, naive = meta("googlenet"), meta("googlenet", bottleneck=False)
    assert models.count_params(naive) > 10 * models.count_params(paper)  # 97.5M vs 7.0M
    assert not any(isinstance(m, Inception) and isinstance(m.branch4, nn.Sequential)
                   for m in naive.modules())  # no pool projections left
    macs_paper = sum(conv_macs(paper.eval()).values())
    macs_naive = sum(conv_macs(naive.eval()).values())
    assert macs_naive > 5 * macs_paper  # 12.6G vs 1.58G


def test_googlenet_naive_builds_and_runs_small():
    m = models.create("googlenet", 10, 3, stem="cifar", bottleneck=False, width=0.25)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("stem,size", [("cifar", 32), ("imagenet", 64)])
def test_googlenet_forward_backward(stem, size):
    m = models.create("googlenet", 10, 3, stem=stem)
    fwd_bwd(m, size)


def test_googlenet_cifar_stem_keeps_resolution():
    m = models.create("googlenet", 10, 3, input_size=(32, 32))
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.stem)
    assert m.stem[0][0].kernel_size == (3, 3) and m.stem[0][0].stride == (1, 1)
    seen = {}
    for name in ("inception3a", "inception4a", "inception5b"):
        getattr(m, name).register_forward_hook(
            lambda mod, i, o, name=name: seen.__setitem__(name, o.shape[-1]))
    m.eval()
    with torch.no_grad():
        m(torch.randn(1, 3, 32, 32))
    assert seen == {"inception3a": 32, "inception4a": 16, "inception5b": 8}
    imagenet = models.create("googlenet", 10, 3, input_size=(224, 224))
    assert sum(isinstance(x, nn.MaxPool2d) for x in imagenet.stem) == 2


def test_googlenet_aux_outputs_in_train_mode_only():
    m = models.create("googlenet", 10, 3, stem="cifar", aux=True)
    x = torch.randn(2, 3, 32, 32)
    out = m.train()(x)
    assert isinstance(out, GoogLeNetOutputs) and len(out) == 3
    assert all(o.shape == (2, 10) for o in out)
    (out.logits + 0.3 * (out.aux1 + out.aux2)).sum().backward()  # sec. 5: aux weight 0.3
    assert m.aux1.fc2.weight.grad is not None and m.aux2.fc2.weight.grad is not None
    with torch.no_grad():
        ev = m.eval()(x)
    assert isinstance(ev, torch.Tensor) and ev.shape == (2, 10)
    plain = models.create("googlenet", 10, 3, stem="cifar")
    assert not hasattr(plain, "aux1")
    with torch.no_grad():
        assert isinstance(plain.train()(torch.randn(2, 3, 8, 8)), torch.Tensor)
    # the heads take 4a's 512 and 4d's 528 channels; dropout 70% (sec. 5)
    assert m.aux1.conv[0].in_channels == 512 and m.aux2.conv[0].in_channels == 528
    assert m.aux1.dropout.p == 0.7


def test_googlenet_defaults_norms_and_bad_options():
    m = meta("googlenet")
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-3 for b in bns)  # torchvision's BasicConv2d
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))
    assert m.head[2].p == 0.4  # paper: 40% dropout
    gn = meta("googlenet", norm="gn")
    assert not any(isinstance(x, nn.BatchNorm2d) for x in gn.modules())
    assert sum(isinstance(x, nn.GroupNorm) for x in gn.modules()) == len(bns)
    none = meta("googlenet", norm="none")
    assert not any(isinstance(x, (nn.BatchNorm2d, nn.GroupNorm)) for x in none.modules())
    assert all(c.bias is not None for c in none.modules() if isinstance(c, nn.Conv2d))
    with pytest.raises(UsageError, match="variant"):
        models.create("googlenet", 10, 3, variant="v3")
    with pytest.raises(UsageError, match="stem"):
        models.create("googlenet", 10, 3, stem="tiny")


# ---------------------------------------------------------------- DenseNet-121


def densenet121_params_by_hand(k=32, blocks=(6, 12, 24, 16), classes=1000):
    ch = 2 * k
    total = 3 * ch * 49 + 2 * ch  # 7x7 stem conv and its BN
    for i, n in enumerate(blocks):
        for _ in range(n):
            total += 2 * ch + ch * 4 * k + 2 * 4 * k + 4 * k * k * 9  # BN, 1x1, BN, 3x3
            ch += k
        if i < len(blocks) - 1:
            total += 2 * ch + ch * (ch // 2)  # BN, 1x1 compression 0.5
            ch //= 2
    return total + 2 * ch + ch * classes + classes, ch


def test_densenet121_matches_torchvision_and_hand_count():
    with torch.device("meta"):
        tv = torchvision.models.densenet121()
    ours = meta("densenet121")
    by_hand, final_ch = densenet121_params_by_hand()
    assert models.count_params(ours) == models.count_params(tv) == by_hand == 7978856
    assert final_ch == 1024 and ours.head[-1].in_features == 1024  # Table 1: 1024-d features
    transitions = [m[2].out_channels for m in ours.features if isinstance(m, nn.Sequential)]
    assert transitions == [128, 256, 512]
    # torchvision's densenet121 reports 2.834 GMACs ("_ops") at 224x224
    assert round(sum(conv_macs(ours.eval()).values()) / 1e9, 3) == 2.834


@pytest.mark.parametrize("stem,size", [("cifar", 32), ("imagenet", 64)])
def test_densenet121_forward_backward(stem, size):
    m = models.create("densenet121", 10, 3, stem=stem)
    fwd_bwd(m, size)


def test_densenet121_cifar_stem():
    m = models.create("densenet121", 10, 3, input_size=(32, 32))
    first = m.features[0]
    assert first.kernel_size == (3, 3) and first.stride == (1, 1) and first.out_channels == 64
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    m.eval()
    with torch.no_grad():  # as small as 8x8 (the last block then runs at 1x1)
        assert m(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_densenet121_norms():
    bn = meta("densenet121")
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in bn.modules())
    assert n_bn == 1 + 2 * 58 + 3 + 1  # stem, two per layer, transitions, final
    gn = meta("densenet121", norm="gn")
    assert not any(isinstance(x, nn.BatchNorm2d) for x in gn.modules())
    assert sum(isinstance(x, nn.GroupNorm) for x in gn.modules()) == n_bn
    none = meta("densenet121", norm="none")
    assert not any(isinstance(x, (nn.BatchNorm2d, nn.GroupNorm)) for x in none.modules())


def test_densenet121_options_change_structure():
    def final_ch(m):
        return m.head[-1].in_features

    base = meta("densenet121")
    assert final_ch(meta("densenet121", growth_rate=12)) == 1024 * 12 // 32
    assert final_ch(meta("densenet121", width=0.5)) == 512
    # no compression: every channel survives the transitions, 64 + 58 * 32
    assert final_ch(meta("densenet121", compression=1.0)) == 64 + 58 * 32
    plain = meta("densenet121", bottleneck=False)
    def n_1x1(m):
        return sum(isinstance(x, nn.Conv2d) and x.kernel_size == (1, 1) for x in m.modules())

    assert n_1x1(base) == 58 + 3 and n_1x1(plain) == 3  # only the transitions keep theirs
    assert models.count_params(plain) != models.count_params(base)
    assert meta("densenet121", dropout=0.2).features[4][0].dropout == 0.2
    for bad in ({"compression": 0}, {"compression": 1.5}, {"growth_rate": 0}):
        with pytest.raises(UsageError):
            models.create("densenet121", 10, 3, **bad)


def test_densenet121_memory_efficient_is_the_same_function():
    torch.manual_seed(0)
    a = models.create("densenet121", 5, 3, stem="cifar", growth_rate=8)
    b = models.create("densenet121", 5, 3, stem="cifar", growth_rate=8, memory_efficient=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 8, 8)
    out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.sum().backward()
    out_b.sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad)
