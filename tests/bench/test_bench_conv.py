"""cnnlab.bench.convalgos / conv / suites and `cnnlab bench-conv`: correctness, not speed."""

from fractions import Fraction

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cnnlab.bench import conv, convalgos, suites
from cnnlab.cli.main import app
from cnnlab.errors import UsageError

runner = CliRunner()

# (N, C, H, W, K, R, S, stride, pad): odd sizes, padding, batch 1, one channel, non-square
SHAPES = [(1, 1, 5, 5, 1, 3, 3, 1, 0), (2, 3, 7, 9, 4, 3, 3, 1, 1), (1, 5, 11, 8, 6, 3, 3, 1, 2),
          (3, 2, 13, 13, 3, 5, 5, 1, 2), (2, 4, 9, 10, 3, 3, 3, 2, 1), (1, 3, 12, 13, 2, 7, 7, 1, 3),
          (2, 1, 16, 15, 1, 9, 9, 1, 0)]
# fp32 bounds of ||y - ref|| / ||ref|| against fp64 conv2d. winograd4's larger transform
# constants (up to 8 in A^T, 1/24 in G) cost about an order of magnitude: bound 1e-4.
BOUND = {"im2col": 1e-5, "winograd2": 1e-5, "fft": 1e-4, "winograd4": 1e-4, "library": 1e-5,
         "naive": 1e-5, "nnpack": 1e-4}


def _ref(x, w, stride, pad):
    return F.conv2d(x.double(), w.double(), stride=stride, padding=pad)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("algo", sorted(convalgos.ALGOS))
def test_every_algorithm_matches_fp64_conv2d(algo, shape):
    n, c, h, w_, k, r, s, stride, pad = shape
    g = torch.Generator().manual_seed(hash(shape) % 2 ** 31)
    x, w = torch.randn(n, c, h, w_, generator=g), torch.randn(k, c, r, s, generator=g)
    if convalgos.supported(algo, r, s, stride, torch.float32) is not None:
        if algo != "nnpack":  # the others refuse with NotApplicable, not a wrong answer
            with pytest.raises(convalgos.NotApplicable):
                convalgos.ALGOS[algo](x, w, stride, pad)
        return
    try:
        y = convalgos.ALGOS[algo](x, w, stride, pad)
    except RuntimeError:
        if algo == "nnpack":  # compiled in, but NNPACK fails on some CPUs and shapes
            pytest.skip("NNPACK failed on this CPU")
        raise
    ref = _ref(x, w, stride, pad)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert float((y.double() - ref).norm() / ref.norm()) < BOUND[algo]
    y64 = convalgos.ALGOS[algo](x.double(), w.double(), stride, pad) if algo != "nnpack" else None
    if y64 is not None:  # in fp64 every algorithm is exact to rounding
        assert float((y64 - ref).norm() / ref.norm()) < 1e-12


@pytest.mark.parametrize("m", [2, 4])
def test_transform_matrices_give_the_exact_1d_and_2d_results(m):
    """y = A^T [(G g) * (B^T d)] is the correlation of d (m + 2 values) with g (3 taps), in
    exact rational arithmetic and in fp64; nested, the 2-D F(m x m, 3 x 3)."""
    BT, G, AT = (convalgos.WINOGRAD[m][k] for k in ("BT", "G", "AT"))
    d = [Fraction(v) for v in (3, -1, 4, 1, -5, 9)[:m + 2]]
    g = [Fraction(v) for v in (2, -7, 1)]
    gt = [sum(G[i][j] * g[j] for j in range(3)) for i in range(m + 2)]
    dt = [sum(BT[i][j] * d[j] for j in range(m + 2)) for i in range(m + 2)]
    y = [sum(AT[i][j] * gt[j] * dt[j] for j in range(m + 2)) for i in range(m)]
    assert y == [sum(d[i + j] * g[j] for j in range(3)) for i in range(m)]  # exact
    BT, G, AT = convalgos.winograd_matrices(m)
    assert BT.dtype == torch.float64
    gen = torch.Generator().manual_seed(m)
    d2 = torch.randint(-9, 10, (m + 2, m + 2), generator=gen).double()
    g2 = torch.randint(-9, 10, (3, 3), generator=gen).double()
    y2 = AT @ ((G @ g2 @ G.T) * (BT @ d2 @ BT.T)) @ AT.T
    direct = F.conv2d(d2[None, None], g2[None, None])[0, 0]
    if m == 2:  # dyadic constants: exact in fp64
        assert torch.equal(y2, direct)
    else:  # 1/6 and 1/24 round; integers come back to within a few ulps
        assert torch.allclose(y2, direct, rtol=0, atol=1e-12)


def test_im2col_extra_memory_is_about_k2_times_the_input():
    df = conv.measure(shapes=["2,16,24,24,16,3,3,1,1", "2,16,24,24,16,5,5,1,2"],
                      algos=["im2col", "library"], repeats=1, warmup=1)
    im = df[df.algo == "im2col"].set_index("R")
    # the unfolded matrix is C*R*S x P*Q per image: R*S times the input at 'same' padding
    assert im.loc[3, "extra_over_input"] == pytest.approx(9, rel=0.1)
    assert im.loc[5, "extra_over_input"] == pytest.approx(25, rel=0.1)
    assert (im.extra_bytes > 0).all()


def test_measure_rows_columns_and_ratios():
    df = conv.measure(shapes=["1,3,10,10,4,3,3,1,1", "1,2,12,12,3,5,5,1,2"],
                      algos=["im2col", "winograd2", "fft", "library"],
                      precisions=("fp32", "bf16"), repeats=2, warmup=1)
    need = {"suite", "layer", "N", "C", "H", "W", "K", "R", "S", "stride", "pad", "P", "Q", "algo",
            "precision", "median_ms", "iqr_ms", "gflops", "pct_peak", "extra_bytes", "input_bytes",
            "extra_over_input", "kernel_area", "rel_err", "max_abs_err", "library_rel_err",
            "speedup_vs_library", "speedup_vs_im2col", "fastest", "supported"}
    assert need <= set(df.columns)
    assert len(df) == 2 * 4 * 2 and df.suite.eq("custom").all()
    bad = df[~df.supported]
    # winograd on the 5x5 layer, fft in bf16 on CPU: rows kept, figures NaN, a reason given
    assert set(zip(bad.R, bad.algo, bad.precision)) >= {(5, "winograd2", "fp32"), (3, "fft", "bf16")}
    assert bad.median_ms.isna().all() and (bad.reason != "").all()
    ok = df[df.supported]
    assert (ok.median_ms > 0).all() and (ok.gflops > 0).all() and ok.rel_err.notna().all()
    lib = ok[ok.algo == "library"]
    assert (lib.speedup_vs_library == 1.0).all()
    assert (ok[ok.precision == "fp32"].rel_err < 1e-5).all()
    assert (ok[ok.precision == "bf16"].rel_err > 1e-4).all()  # bf16 has 8 bits of mantissa
    assert ok.groupby(["layer", "precision"]).fastest.sum().eq(1).all()
    first = df.iloc[0]
    assert first.gflops == pytest.approx(2 * 1 * 4 * 3 * 9 * 10 * 10 / first.median_ms / 1e6)
    assert df.attrs["peak_gflops"]["fp32"] > 0 and df.attrs["machine"]["threads"] >= 1


def test_backward_and_quick_suite_run():
    df = conv.measure(shapes=["2,3,9,9,4,3,3,1,1"], algos=["im2col", "winograd4", "library"],
                      backward=True, repeats=1, warmup=1)
    assert df.supported.all() and df.backward.all() and (df.rel_err < 1e-4).all()
    q = conv.measure("convnet-benchmarks", algos=["fft", "library"], quick=True, batch=8)
    assert set(q.N) == {2} and q.layer.tolist()[::2] == ["L1", "L2", "L3", "L4", "L5"]


def test_suites_and_shape_parsing():
    assert len(suites.SUITES["vgg16"]) == 9  # VGG-16's 13 conv layers have 9 unique shapes
    assert [(l.C, l.K, l.R) for l in suites.SUITES["convnet-benchmarks"]] == [
        (3, 96, 11), (64, 128, 9), (128, 128, 9), (128, 128, 7), (384, 384, 3)]
    n, layer = suites.parse_shape("8,64,56,56,64,3,3,1,1")
    assert n == 8 and layer.out_hw() == (56, 56)
    for bad in ("1,2,3", "8,64,56,56,64,3,3,1,x", "8,0,5,5,1,3,3,1,0", "1,1,2,2,1,5,5,1,0"):
        with pytest.raises(UsageError):
            suites.parse_shape(bad)


def test_cli_quick_shape_writes_its_files_and_rows(tmp_path, outputs):
    out = tmp_path / "bc"
    r = runner.invoke(app, ["bench-conv", "--quick", "--shape", "2,8,12,12,8,3,3,1,1",
                            "--algos", "im2col,winograd2,library", "--repeats", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for f in ("conv.csv", "conv.md", "conv.png", "machine.json"):
        assert (out / f).is_file(), f
    df = pd.read_csv(out / "conv.csv")
    assert sorted(df.algo) == ["im2col", "library", "winograd2"]
    rows = pd.read_csv(outputs / "bench.csv")
    assert len(rows) == 3 and rows.run_id.str.startswith("bench-conv-").all()
    assert rows.status.eq("bench").all() and rows.precision.eq("fp32").all()
    assert set(rows.bench_algo) == {"im2col", "library", "winograd2"}


@pytest.mark.parametrize("args", [["--shape", "1,2,3"], ["--suite", "nope"],
                                  ["--shape", "1,1,4,4,1,3,3,1,0", "--algos", "bogus"],
                                  ["--shape", "1,1,4,4,1,3,3,1,0", "--precision", "fp8"]])
def test_cli_bad_input_is_one_line_and_exit_2(args):
    r = runner.invoke(app, ["bench-conv", *args])
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.startswith("error:")


@pytest.mark.parametrize("algo", ["im2col", "fft", "winograd2", "winograd4", "naive"])
def test_gradients_through_autograd_match_conv2d(algo):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    gy = torch.randn(2, 4, 7, 9, dtype=torch.float64, generator=g)
    gx, gw = torch.autograd.grad(convalgos.ALGOS[algo](x, w, 1, 1), (x, w), gy)
    rx, rw = torch.autograd.grad(F.conv2d(x, w, padding=1), (x, w), gy)
    assert torch.allclose(gx, rx, atol=1e-10) and torch.allclose(gw, rw, atol=1e-10)


def test_bench_conv_device_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch
    from typer.testing import CliRunner

    from cnnlab.cli.main import app

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    out = CliRunner().invoke(app, ["bench-conv", "--quick", "--device", "cuda", "--out", str(tmp_path / "bc")])
    assert out.exit_code == 2 and out.output.strip() == "error: --device=cuda but this machine has no CUDA device"
