"""Convolution algorithms written out in torch: im2col, FFT, Winograd, beside the library's own.

Every algorithm is a function (x, w, stride, padding) -> y computing what
torch.nn.functional.conv2d(x, w, stride=stride, padding=padding) computes (a cross-correlation,
no bias, NCHW), in the dtype of x. ALGOS maps the short names users type to these functions;
`supported(name, ...)` says why an algorithm does not apply to a layer or a dtype.

  im2col     F.unfold to the (C*R*S) x (P*Q) matrix per image, then one GEMM with the (K, C*R*S)
             filter matrix: the lecture's method, and its R*S-fold copy of the input
  fft        zero-padded rfft2 of input and filters, the channel sum as one batched complex
             matrix product per frequency, irfft2, crop (stride 1)
  winograd2  F(2x2, 3x3), winograd4  F(4x4, 3x3) (Lavin & Gray 2016, "Fast Algorithms for
             Convolutional Neural Networks", sec. 4): overlapping tiles of side alpha = m + 2
             taken with unfold (a strided view), the input/filter/output transforms applied as
             small dense matrices on the alpha*alpha tile positions, and alpha*alpha GEMMs
             [K, C] x [C, N*tiles] in one batched matmul (3x3, stride 1)
  library    F.conv2d (oneDNN on CPU, cuDNN on GPU)
  nnpack     torch._nnpack_spatial_convolution, when this torch build has NNPACK (fp32, CPU)
  naive      a direct sum over the R*S filter taps, vectorised over everything else: a tiny-size
             reference for the tests, not timed by default
"""

from __future__ import annotations

from fractions import Fraction as Fr

NOT_DEFAULT = ("naive",)  # registered but left out of the benchmark unless named


class NotApplicable(Exception):
    """An algorithm cannot compute this layer in this dtype; the message says why."""


# --------------------------------------------------------------------------- transform matrices
# Lavin & Gray 2016, sec. 4.1 (F(2x2,3x3), eq. 7-8) and sec. 4.2 (F(4x4,3x3)); kept as exact
# fractions so fp64 reproduces the 1-D results exactly where the values are dyadic.

WINOGRAD = {
    2: {"BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        "G": [[1, 0, 0], [Fr(1, 2), Fr(1, 2), Fr(1, 2)], [Fr(1, 2), Fr(-1, 2), Fr(1, 2)], [0, 0, 1]],
        "AT": [[1, 1, 1, 0], [0, 1, -1, -1]]},
    4: {"BT": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        "G": [[Fr(1, 4), 0, 0], [Fr(-1, 6), Fr(-1, 6), Fr(-1, 6)], [Fr(-1, 6), Fr(1, 6), Fr(-1, 6)],
              [Fr(1, 24), Fr(1, 12), Fr(1, 6)], [Fr(1, 24), Fr(-1, 12), Fr(1, 6)], [0, 0, 1]],
        "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]},
}


def winograd_matrices(m: int, dtype=None, device=None):
    """(BT, G, AT) of F(m, 3) as tensors: y = AT [(G g) * (BT d)] for a tile d of m + 2 inputs
    and a filter g of 3 taps gives the m outputs of their correlation."""
    import torch

    dtype = dtype or torch.float64
    return tuple(torch.tensor([[float(v) for v in row] for row in WINOGRAD[m][k]], dtype=dtype,
                              device=device) for k in ("BT", "G", "AT"))


# --------------------------------------------------------------------------- algorithms

def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def out_size(h: int, w: int, r: int, s: int, stride, padding) -> tuple[int, int]:
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    return (h + 2 * ph - r) // sh + 1, (w + 2 * pw - s) // sw + 1


def library(x, w, stride=1, padding=0):
    """torch.nn.functional.conv2d: oneDNN (mkldnn) on CPU, cuDNN on GPU."""
    import torch.nn.functional as F

    return F.conv2d(x, w, stride=_pair(stride), padding=_pair(padding))


def nnpack(x, w, stride=1, padding=0):
    """NNPACK's spatial convolution (fp32 CPU, stride 1), as exposed by torch."""
    import torch

    return torch._nnpack_spatial_convolution(x, w, None, _pair(padding), _pair(stride))


def im2col(x, w, stride=1, padding=0):
    """F.unfold to [N, C*R*S, P*Q], one (broadcast) GEMM with the [K, C*R*S] filter matrix."""
    import torch.nn.functional as F

    n, k, (r, s) = x.shape[0], w.shape[0], w.shape[2:]
    p, q = out_size(x.shape[2], x.shape[3], r, s, stride, padding)
    cols = F.unfold(x, (r, s), padding=_pair(padding), stride=_pair(stride))
    return (w.reshape(k, -1) @ cols).view(n, k, p, q)


def fft(x, w, stride=1, padding=0):
    """Correlation by the convolution theorem: Y = irfft2(sum_c X_c * conj(W_kc)), cropped.

    The transforms have the padded input's size (Hp, Wp): with the filter zero-padded to it the
    circular correlation equals the linear one on the P x Q outputs (p + r < Hp: no wrap)."""
    import torch

    if _pair(stride) != (1, 1):
        raise NotApplicable("fft computes stride 1 only")
    (ph, pw), (n, c, h, wd), (k, _, r, s) = _pair(padding), x.shape, w.shape
    hp, wp = h + 2 * ph, wd + 2 * pw
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    X = torch.fft.rfft2(xp)  # [N, C, Hp, Wp//2+1]
    Wf = torch.fft.rfft2(w, s=(hp, wp))  # [K, C, Hp, Wp//2+1]
    fh, fw = X.shape[2], X.shape[3]
    # per frequency [N, C] @ [C, K], conj(W) turning the product theorem's convolution into
    # correlation; operands made contiguous first (bmm on strided batches copies matrix by
    # matrix)
    Xm = X.reshape(n, c, fh * fw).permute(2, 0, 1).contiguous()
    Wm = Wf.reshape(k, c, fh * fw).permute(2, 1, 0).conj().contiguous()
    Y = torch.bmm(Xm, Wm).permute(1, 2, 0).reshape(n, k, fh, fw)  # [F, N, K] -> [N, K, fh, fw]
    y = torch.fft.irfft2(Y, s=(hp, wp))
    p, q = hp - r + 1, wp - s + 1
    return y[:, :, :p, :q]


def _combine(mat, parts, out=None):
    """rows[i] = sum_j mat[i][j] * parts[j] for a small constant matrix: whole-tensor adds that
    skip the zeros (the transforms are sparse: B^T of F(2,3) has 8 non-zeros of 16), written
    into out[i] when given."""
    import torch

    rows = []
    for i, row in enumerate(mat):
        # a +-1 term first, so the first add needs no separate scaling pass
        terms = sorted(((float(c), parts[j]) for j, c in enumerate(row) if c != 0),
                       key=lambda t: abs(t[0]) != 1)
        kw = {} if out is None else {"out": out[i]}
        (c0, p0), rest = terms[0], terms[1:]
        if rest:
            acc = torch.add(p0, rest[0][1], alpha=rest[0][0] / c0, **kw)
            rest = rest[1:]
            if c0 != 1:
                acc.mul_(c0)
        else:
            acc = torch.mul(p0, c0, **kw)
        for c, p in rest:
            acc.add_(p, alpha=c)
        rows.append(acc)
    return rows


def winograd(x, w, stride=1, padding=0, m: int = 2):
    """F(m x m, 3 x 3): alpha = m + 2 input tiles overlapping by 2, alpha^2 batched GEMMs.

    U = G g G^T per (K, C) filter; V = B^T d B per (C, tile); M_xi = U_xi V_xi, one [K, C] x
    [C, tiles] GEMM for each of the alpha^2 positions xi and image; Y = A^T M A per (K, tile).
    The tiles are never gathered: B^T acting on the rows of every tile at once is a sum of
    strided row slices of the padded image (tile row t starts at row m*t), and the same on the
    columns; the output transform writes strided slices of the output the same way. The loops
    run over the transform matrices' entries (at most 36), never over pixels or channels."""
    import torch
    import torch.nn.functional as F

    if tuple(w.shape[2:]) != (3, 3) or _pair(stride) != (1, 1):
        raise NotApplicable(f"winograd{m} computes 3x3 filters at stride 1 only")
    a = m + 2
    (ph, pw), (n, c, h, wd), k = _pair(padding), x.shape, w.shape[0]
    p, q = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = -(-p // m), -(-q // m)  # tiles per column and row
    mats = WINOGRAD[m]
    # pad on the bottom/right so the last tile is whole; its extra outputs are cropped
    xp = F.pad(x, (pw, pw + tw * m - q, ph, ph + th * m - p))
    rows = [xp[:, :, j:j + m * (th - 1) + 1:m, :] for j in range(a)]  # [N, C, th, Wp] views
    rows = _combine(mats["BT"], rows)
    grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    _, G, _ = winograd_matrices(m, x.dtype, x.device)
    U = (torch.kron(G, G) @ w.reshape(k * c, 9).T).view(a * a, k, c)
    if grad:  # autograd cannot see through the out= writes below: stack instead (more copies)
        V = torch.stack([torch.stack(_combine(mats["BT"], [r[..., j:j + m * (tw - 1) + 1:m]
                                                           for j in range(a)]))
                         for r in rows]).transpose(2, 3).reshape(a * a, c, n * th * tw)
    else:  # V laid out [alpha^2, C, N*T] so the GEMMs below need no copy of either operand
        V = x.new_empty(a, a, c, n, th, tw)
        for i, r in enumerate(rows):
            cols = [r[..., j:j + m * (tw - 1) + 1:m] for j in range(a)]
            _combine(mats["BT"], cols, out=V[i].transpose(1, 2))
    M = torch.matmul(U, V.view(a * a, c, n * th * tw)).view(a, a, k, n, th, tw)
    Z = [_combine(mats["AT"], [M[i, j].transpose(0, 1) for j in range(a)]) for i in range(a)]
    if grad:
        y = torch.stack([torch.stack(_combine(mats["AT"], [Z[i][v] for i in range(a)]), 2)
                         for v in range(m)], 2)  # [N, K, m(v), m(u), th, tw]
        return y.permute(0, 1, 4, 3, 5, 2).reshape(n, k, th * m, tw * m)[:, :, :p, :q]
    y = x.new_empty(n, k, th, m, tw, m)
    for i in range(a):  # A^T along the columns of each tile row i (Z) ...
        for u in range(m):  # ... then along the rows, straight into the strided output
            coef = float(mats["AT"][u][i])
            first = i == min(j for j in range(a) if mats["AT"][u][j] != 0)
            for v in range(m):
                if coef and first:
                    torch.mul(Z[i][v], coef, out=y[:, :, :, u, :, v])
                elif coef:
                    y[:, :, :, u, :, v].add_(Z[i][v], alpha=coef)
    return y.view(n, k, th * m, tw * m)[:, :, :p, :q]


def winograd2(x, w, stride=1, padding=0):
    """Winograd F(2x2, 3x3): 16 multiplies per 4 outputs instead of 36 (2.25x fewer)."""
    return winograd(x, w, stride, padding, m=2)


def winograd4(x, w, stride=1, padding=0):
    """Winograd F(4x4, 3x3): 36 multiplies per 16 outputs instead of 144 (4x fewer), with
    larger transform constants, so a larger rounding error."""
    return winograd(x, w, stride, padding, m=4)


def naive(x, w, stride=1, padding=0):
    """Direct convolution as the definition reads: a sum over the R*S taps of a strided slice
    times the [K, C] tap matrix. Loops only over the filter taps; a test reference."""
    import torch
    import torch.nn.functional as F

    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    k, _, r, s = w.shape
    p, q = out_size(x.shape[2], x.shape[3], r, s, stride, padding)
    xp = F.pad(x, (pw, pw, ph, ph))
    y = torch.zeros(x.shape[0], k, p, q, dtype=x.dtype, device=x.device)
    for i in range(r):
        for j in range(s):
            patch = xp[:, :, i:i + sh * (p - 1) + 1:sh, j:j + sw * (q - 1) + 1:sw]
            y += torch.einsum("nchw,kc->nkhw", patch, w[:, :, i, j])
    return y


ALGOS = {"im2col": im2col, "fft": fft, "winograd2": winograd2, "winograd4": winograd4,
         "library": library, "nnpack": nnpack, "naive": naive}


def available() -> list[str]:
    """Algorithms this torch build can run (nnpack only where torch was built with it)."""
    import torch

    names = [a for a in ALGOS if a not in NOT_DEFAULT]
    if not torch.backends.nnpack.is_available():
        names.remove("nnpack")
    return names


def supported(name: str, r: int, s: int, stride: int, dtype, device="cpu") -> str | None:
    """None if algorithm `name` computes this layer in this dtype, else the reason it does not."""
    import torch

    dev = torch.device(device).type
    if name in ("winograd2", "winograd4") and ((r, s) != (3, 3) or stride != 1):
        return f"{name} is for 3x3 filters at stride 1"
    if name == "fft":
        if stride != 1:
            return "fft computes stride 1 only"
        if dev == "cpu" and dtype in (torch.float16, torch.bfloat16):
            return f"torch.fft has no {str(dtype).removeprefix('torch.')} kernels on CPU"
    if name == "nnpack":
        if not torch.backends.nnpack.is_available():
            return "this torch build has no NNPACK"
        if dev != "cpu" or dtype != torch.float32:
            return "NNPACK computes fp32 on CPU only"
    return None
