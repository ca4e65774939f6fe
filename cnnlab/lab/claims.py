"""The lecture claims cnnlab exists to test (C1-C24), and which experiment files test them.

The claims are the practical statements of the CS231n lectures on CNNs in practice (lectures 5,
6 and 11), the LeNet/AlexNet papers and a deep-learning basics summary, in cnnlab's words. An
experiment file names the claim(s) it tests in `claim:` ("C8" or "C8, C9"); `claim: "-"` marks
an experiment behind one of cnnlab's own defaults rather than a lecture claim.
"""

from __future__ import annotations

import re

CLAIMS: dict[str, str] = {
    "C1": "Data augmentation helps, and helps more the less data there is.",
    "C2": "Each classic augmentation (flip, crop/scale, colour jitter, PCA lighting) helps on its own.",
    "C3": "Ten-crop testing beats a single centre crop; several scales add more.",
    "C4": "The transfer strategy depends on data size x similarity to the source (the 2x2 quadrant).",
    "C5": "Fine-tune pretrained layers with smaller learning rates than the new head.",
    "C6": "Transfer beats training from scratch even from an unrelated source.",
    "C7": "Fine-tuning reaches a given accuracy 2-3x faster than training from scratch.",
    "C8": "Three stacked 3x3 convs see 7x7 with 27C^2 weights instead of 49C^2: small filters are better.",
    "C9": "1x1 bottlenecks cut parameters and operations (inception 854M -> 358M); NxN splits into 1xN + Nx1.",
    "C10": "im2col is one matrix product at k^2 x the input's memory; FFT pays off for large kernels; "
           "Winograd cuts the multiplies for small ones.",
    "C11": "fp32 trains as well as fp64 and faster; 16-bit is faster still but needs loss scaling or "
           "stochastic rounding.",
    "C12": "Batch norm allows larger learning rates and trains faster.",
    "C13": "Group norm holds up at small batches where batch norm degrades.",
    "C14": "AlexNet: overlapping pooling, LRN and dropout each help.",
    "C15": "ReLU trains several times faster than tanh or sigmoid.",
    "C16": "Deeper plain nets train worse; residual connections fix it.",
    "C17": "An ensemble of CNNs beats each member.",
    "C18": "Optimisers differ (SGD, momentum, Nesterov, Adagrad, Adadelta, RMSprop, Adam).",
    "C19": "Regularisers (weight decay, early stopping, label smoothing, mixup, cutout, cutmix, "
           "dropout) improve generalisation.",
    "C20": "Conv layers hold few parameters but most compute; fully connected layers the reverse.",
    "C21": "Conv arithmetic: output (W - F + 2P)/S + 1; k*k*Cin*Cout weights; padding and stride "
           "leave the weights alone.",
    "C22": "Data parallelism across devices speeds up training.",
    "C23": "Data loading can be the bottleneck: keep data preprocessed and close to the compute.",
    "C24": "Famous architectures have characteristic sizes (AlexNet ~60M, VGG-16 ~138M, GoogLeNet "
           "~5-7M, ResNet-50 ~25M).",
}


# Notes the report prints under a claim where the lecture's own figures need a word.
NOTES: dict[str, str] = {
    "C9": "Note on the slide's figures: its line items for the inception module with 1x1 "
          "reductions (1x1 64, 1x1 64, 1x1 128, 3x3 192 on 64, 5x5 96 on 64, 1x1 64 after the "
          "pool, on 28x28x256) add up to 271M operations, not 358M (358M counts the 86.7M 3x3 "
          "term twice): the reduction is 854M -> 271M, not 854M -> 358M. The 854M of the module "
          "without reductions does add up. cnnlab computes 271.35M (experiment block_costs).",
}


def claim_ids(field: str) -> list[str]:
    """'C8, C9' -> ['C8', 'C9']; '-' (a cnnlab default, not a lecture claim) -> []."""
    return [c.upper() for c in re.findall(r"[Cc]\d+", str(field or ""))]


def catalogue(specs) -> dict[str, list[str]]:
    """Claim id -> the names of the experiments that test it (every claim, [] if none)."""
    out: dict[str, list[str]] = {c: [] for c in CLAIMS}
    for spec in specs:
        for c in claim_ids(spec.claim):
            out.setdefault(c, []).append(spec.name)
    return out


def sort_key(claim: str) -> tuple:
    ids = claim_ids(claim)
    return (0, int(ids[0][1:])) if ids else (1, 0)
