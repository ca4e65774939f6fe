"""scikit-learn's handwritten digits: the offline default dataset."""

from __future__ import annotations

from cnnlab.data.registry import register_dataset
from cnnlab.data.base import Pools, Split


@register_dataset("digits", "1,797 real 8x8 grey handwritten digits, shipped with scikit-learn",
                  size=8, channels=1)
def load_digits(cfg) -> Pools:
    import torch
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # Pixel values are counts 0..16 (UCI optdigits); scale them to the usual 0..255 range.
    pixels = torch.from_numpy(bunch.images).mul_(255.0 / 16.0).round_().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    return Pools(train=Split(labels=labels, images=pixels.unsqueeze(1).contiguous()), test=None,
                 class_names=[str(c) for c in bunch.target_names])
