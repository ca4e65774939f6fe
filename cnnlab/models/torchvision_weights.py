"""torchvision's pretrained ImageNet weights, loaded into cnnlab's own implementations, offline.

A source is named `<arch>.<WEIGHTS>`: torchvision's model name, a dot, and a member of that
model's weights enum, e.g. `resnet18.IMAGENET1K_V1`, `mobilenet_v2.IMAGENET1K_V2` or
`resnet50.DEFAULT` (torchvision's documentation, "Models and pre-trained weights", lists the
members; `DEFAULT` is an alias of the best one). The weights object supplies the URL of the file,
its preprocessing (resize, crop, mean and std of its `transforms()`) and its class names
(`meta["categories"]`).

Offline only. torchvision would download the file into torch hub's cache
(`$TORCH_HOME/hub/checkpoints/<file name of the URL>`, torch.hub's `load_state_dict_from_url`);
cnnlab never downloads anything, it reads the file from that same place, so one fetched by
torchvision, by `wget`, or copied from another machine is found. A missing file is a DataError
naming the URL and the exact path.

Why the tensors are mapped by position and then checked by running both networks. cnnlab's
modules are named after the papers (`stem`, `stages.0.1.norm2`, `head.3`), torchvision's after
its own history (`conv1`, `layer1.1.bn2`, `fc`), so names cannot be matched; but both register
the same layers in the same order, so the i-th tensor of one state dict is the i-th tensor of
the other, which equal shapes pair by pair confirm. Equal shapes do not prove the pairing:
two batch norms or two 3x3 convs of one width look alike and could sit in the other's place.
So every load builds torchvision's own network with the same file, runs it and the cnnlab
network on one fixed random batch, and refuses the weights unless the outputs agree (`_verify`).
The positional mapping is one generic function (`key_map`); the few architectures that need
anything else get it from the small `RECIPES` table, not from their own code.

`num_batches_tracked` buffers are left out of the pairing: files saved before PyTorch 0.4
(densenet121's, for one) have none, and they hold no weights. Each cnnlab batch norm takes the
counter of the torchvision batch norm its running mean came from, or 0 when the file has none,
which is what PyTorch itself assumes for such old files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cnnlab.errors import CnnlabError, DataError, UsageError

NBT = "num_batches_tracked"
BATCH = 2  # images in the verification batch
# outputs must agree to this fraction of their largest magnitude: both networks run the same
# layers on the same numbers, so they normally agree exactly; googlenet's differ by float32
# rounding, its input being normalised in one step here and in two in torchvision's network
RTOL = 1e-4

# torchvision's densenet files predate the ban on dots in module names and store
# `denselayer1.norm.1.weight` for what its modules now call `denselayer1.norm1.weight`;
# torchvision's densenet builder renames them with a pattern of this form before loading.
_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")


@dataclass(frozen=True)
class Recipe:
    """How one torchvision architecture is rebuilt in cnnlab.

    model          cnnlab registry name.
    options        cnnlab `models.create` options that give torchvision's layout.
    reference      keyword arguments for `torchvision.models.get_model` so that torchvision's
                   reference network is the one its pretrained weights are used with.
    drop           prefixes of torchvision keys that have no cnnlab counterpart and are skipped.
    renormalised   torchvision's network rescales its input itself (googlenet's
                   `transform_input`); the cnnlab network does not, so it must be fed pixels
                   normalised with mean 0.5 and std 0.5 instead of the weights' statistics.
    """

    model: str
    options: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    renormalised: bool = False


RECIPES: dict[str, Recipe] = {
    # torchvision's alexnet is Krizhevsky's 2014 "one weird trick" network; cnnlab's default is
    # the 2012 paper's, `variant=owt` torchvision's (see cnnlab/models/alexnet.py).
    "alexnet": Recipe("alexnet", {"variant": "owt"}),
    # torchvision's googlenet has 3x3 convs in the "5x5" branch (pytorch/vision#906); cnnlab
    # builds that with `variant=torchvision`. Its file also holds the two auxiliary heads, which
    # torchvision's builder drops unless asked for and, when asked, warns are "NOT pretrained";
    # cnnlab follows the default and drops them (`aux=False`). The pretrained network was built
    # with `transform_input=True` (torchvision's googlenet builder sets it with weights): it turns
    # ImageNet-normalised input into (pixel - 0.5) / 0.5, an affine map that cannot be folded into
    # the zero-padded first conv exactly, so cnnlab's network gets that normalisation instead.
    "googlenet": Recipe("googlenet", {"variant": "torchvision", "aux": False},
                        {"aux_logits": True, "transform_input": True, "init_weights": False},
                        drop=("aux1.", "aux2."), renormalised=True),
    # vgg*_bn is cnnlab's vgg* with `norm=bn` (cnnlab/models/vgg.py)
    **{f"vgg{d}_bn": Recipe(f"vgg{d}", {"norm": "bn"}) for d in (11, 13, 16, 19)},
}


def recipe(arch: str) -> Recipe:
    """The recipe of `arch`: its entry in RECIPES, else the cnnlab model of the same name."""
    return RECIPES.get(arch, Recipe(arch))


@dataclass
class LoadedWeights:
    """A cnnlab network holding torchvision's pretrained weights, with what it expects as input.

    `model` is in eval mode on the CPU. `mean`/`std` are the normalisation *this* network expects
    (the weights' own, except googlenet's 0.5s, see RECIPES), `input_size` the crop and
    `resize_size` the shorter side resized to before cropping, from the weights' transforms.
    `categories` names the source's classes; with `num_classes` given and different,
    `new_keys` lists the freshly initialised tensors of the new classifier.
    """

    spec: str
    arch: str  # torchvision name
    weights_name: str  # the enum member, DEFAULT resolved (e.g. IMAGENET1K_V2)
    model_name: str  # cnnlab registry name
    options: dict  # cnnlab model options that rebuild this architecture
    model: nn.Module
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    categories: list[str]
    num_params: int
    path: Path
    url: str
    max_abs_diff: float  # largest output difference in the verification
    new_keys: tuple[str, ...] = ()


# --- naming a source ---------------------------------------------------------------------------

def parse(spec: str) -> tuple[str, str]:
    """`"resnet18.IMAGENET1K_V1"` -> `("resnet18", "IMAGENET1K_V1")`; UsageError on bad form."""
    text = spec.strip() if isinstance(spec, str) else ""
    parts = text.split(".")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UsageError(f"torchvision weights are named <arch>.<WEIGHTS>, e.g. "
                         f"resnet18.IMAGENET1K_V1 or resnet18.DEFAULT; got '{spec}'")
    return parts[0].strip(), parts[1].strip()


def _torchvision_archs() -> list[str]:
    """torchvision's classification models (detection, video, ... take other inputs)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _check_arch(arch: str, need_cnnlab: bool) -> str:
    if arch.lower() not in _torchvision_archs():
        raise UsageError(f"'{arch}' is not a torchvision classification model; cnnlab can load "
                         f"torchvision weights for: {', '.join(supported())}")
    arch = arch.lower()
    if need_cnnlab and arch not in supported():
        raise UsageError(f"cnnlab has no implementation of torchvision's {arch}; it can load "
                         f"torchvision weights for: {', '.join(supported())}")
    return arch


def weights_enum(spec: str):
    """The torchvision weights enum member `spec` names (any torchvision classification model).

    Member names are matched exactly, then ignoring case; `DEFAULT` is torchvision's alias of the
    recommended member. UsageError lists the valid members or architectures."""
    import torchvision

    arch, member = parse(spec)
    arch = _check_arch(arch, need_cnnlab=False)
    enum = torchvision.models.get_model_weights(arch)
    names = list(enum.__members__)  # includes the DEFAULT alias
    match = member if member in names else next(
        (n for n in names if n.lower() == member.lower()), None)
    if match is None:
        raise UsageError(f"torchvision has no weights {arch}.{member}; choose from: "
                         + ", ".join(f"{arch}.{n}" for n in names))
    return enum[match]


def weights_file(spec: str) -> Path:
    """Where torch hub caches the file of `spec`: `<torch.hub.get_dir()>/checkpoints/<name>`,
    the name being the last part of the URL's path, as torch.hub's `load_state_dict_from_url`
    stores it. `TORCH_HOME` moves the hub directory (`$TORCH_HOME/hub`)."""
    url = weights_enum(spec).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


# --- the mapping --------------------------------------------------------------------------------

def key_map(source: dict[str, Any], target: dict[str, Any], drop: tuple[str, ...] = (),
            name: str = "") -> dict[str, str | None]:
    """target key -> source key, pairing the two state dicts in order.

    `source` and `target` map keys to tensors (or anything with `.shape`), in registration order.
    `num_batches_tracked` buffers are paired through their batch norm's running mean (None when
    the source has none) and keys starting with a `drop` prefix are ignored. Raises CnnlabError
    when the counts or any pair's shapes differ. Equal shapes do not prove the pairing; the caller
    verifies it by running both networks."""
    src = [k for k in source if not k.endswith(NBT) and not k.startswith(drop)]
    dst = [k for k in target if not k.endswith(NBT)]
    what = f"mapping torchvision's {name or 'state dict'} onto cnnlab's failed"
    if len(src) != len(dst):
        raise CnnlabError(f"{what}: {len(src)} tensors against {len(dst)}")
    mapping: dict[str, str | None] = {}
    for s, d in zip(src, dst):
        if tuple(source[s].shape) != tuple(target[d].shape):
            raise CnnlabError(f"{what}: {s} {tuple(source[s].shape)} does not fit "
                              f"{d} {tuple(target[d].shape)}")
        mapping[d] = s
    for d in target:
        if d.endswith(NBT):
            mean = mapping.get(d[: -len(NBT)] + "running_mean")
            s = mean[: -len("running_mean")] + NBT if mean else None
            mapping[d] = s if s in source else None
    return {d: mapping[d] for d in target}  # in the target's order


def _reference(arch: str, num_classes: int) -> nn.Module:
    """torchvision's network for `arch` on the meta device (no memory, no initialisation)."""
    from torchvision.models import get_model

    with torch.device("meta"):
        return get_model(arch, weights=None, num_classes=num_classes, **recipe(arch).reference)


def _cnnlab(arch: str, num_classes: int, size: int, meta: bool = True) -> nn.Module:
    from cnnlab import models

    r = recipe(arch)
    if not meta:
        return models.create(r.model, num_classes=num_classes, in_chans=3,
                             input_size=(size, size), **r.options)
    with torch.device("meta"):
        return models.create(r.model, num_classes=num_classes, in_chans=3,
                             input_size=(size, size), **r.options)


@lru_cache(maxsize=1)
def supported() -> tuple[str, ...]:
    """torchvision architectures whose weights cnnlab can load: those with a cnnlab model (same
    name or a RECIPES entry) whose state dict pairs with torchvision's tensor by tensor. Worked
    out on the meta device (shapes only, about a second for all); every actual load is also
    verified by running both networks."""
    from cnnlab import models

    ours = models.list_models(kind="classifier")
    return tuple(sorted(a for a in _torchvision_archs() if recipe(a).model in ours and _pairs(a)))


def _pairs(arch: str) -> bool:
    """Whether torchvision's and cnnlab's state dicts of `arch` pair tensor by tensor."""
    try:
        ref, mine = _reference(arch, 1000), _cnnlab(arch, 1000, 224)
        key_map(ref.state_dict(), mine.state_dict(), recipe(arch).drop, arch)
    except Exception:  # noqa: BLE001 - a model that fails to build is as unloadable as one
        return False   # that does not pair; neither is an error here
    return True


# --- loading ------------------------------------------------------------------------------------

def _read(path: Path, url: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated downloads, HTML error pages, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path} ({first}); fetch {url} again") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path} is not a state dict of tensors; fetch {url} again")
    renamed = {}
    for key, value in state.items():
        m = _LEGACY_DENSENET.match(key)
        renamed[m.group(1) + m.group(2) if m else key] = value
    return renamed


def _load_reference(arch: str, state: dict, num_classes: int, path: Path) -> nn.Module:
    """torchvision's network with the file's tensors (strict: the file must fit it exactly)."""
    ref = _reference(arch, num_classes)
    state = dict(state)
    for key in ref.state_dict():
        if key.endswith(NBT) and key not in state:  # files from before PyTorch 0.4
            state[key] = torch.tensor(0, dtype=torch.long)
    try:
        ref.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise DataError(f"{path} does not hold torchvision's {arch} weights: {detail[:300]}") from exc
    return ref.eval()


def _normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _verify(arch: str, ref: nn.Module, mine: nn.Module, size: int, ref_stats, my_stats) -> float:
    """Largest output difference of the two networks on one fixed random batch; CnnlabError when
    they disagree. Both see the same pixels, each normalised as it expects."""
    gen = torch.Generator().manual_seed(0)  # a local generator: the caller's RNG stays as it was
    pixels = torch.rand(BATCH, 3, size, size, generator=gen)
    ref.eval()
    mine.eval()
    what = f"mapping torchvision's {arch} weights onto cnnlab's {recipe(arch).model} failed"
    try:
        with torch.no_grad():
            want = ref(_normalise(pixels, *ref_stats))
            got = mine(_normalise(pixels, *my_stats))
    except Exception as exc:
        raise CnnlabError(f"{what}: the networks did not run at {size}x{size} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          ) from exc
    if got.shape != want.shape:
        raise CnnlabError(f"{what}: outputs {tuple(got.shape)} against {tuple(want.shape)}")
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    if not torch.isfinite(got).all() or diff > RTOL * max(scale, 1e-12):
        raise CnnlabError(f"{what}: outputs differ by up to {diff:.3g} (output scale {scale:.3g}) "
                          f"although every tensor's shape fits")
    return diff


def _first(values) -> int:
    return int(values[0]) if isinstance(values, (list, tuple)) else int(values)


def load(spec: str, num_classes: int | None = None, check_size: int | None = None) -> LoadedWeights:
    """The cnnlab network of `spec` holding torchvision's pretrained weights, verified.

    Reads `weights_file(spec)` (never downloads; DataError with the URL and the path when it is
    missing), maps its tensors onto the cnnlab model by position (`key_map`) and checks that the
    cnnlab network computes what torchvision's computes on a random batch of `check_size` pixels
    square (default: the weights' crop size; torchvision's `meta["min_size"]` is the floor).
    The model keeps the source's classes unless `num_classes` differs, in which case the layers
    whose shape depends on it (the classifier) are freshly initialised and named in `new_keys`.
    """
    from cnnlab.models import count_params

    arch, _ = parse(spec)
    arch = _check_arch(arch, need_cnnlab=True)
    weights = weights_enum(spec)
    path, url = weights_file(spec), weights.url
    if not path.is_file():
        raise DataError(f"torchvision weights {arch}.{weights.name} are not in the torch hub "
                        f"cache and cnnlab does not download: fetch {url} and save it as {path} "
                        f"(TORCH_HOME moves the cache to $TORCH_HOME/hub)")

    tf = weights.transforms()
    crop, resize = _first(tf.crop_size), _first(tf.resize_size)
    src_mean, src_std = tuple(float(v) for v in tf.mean), tuple(float(v) for v in tf.std)
    r = recipe(arch)
    mean, std = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) if r.renormalised else (src_mean, src_std)
    categories = list(weights.meta["categories"])
    classes = len(categories)

    ref = _load_reference(arch, _read(path, url), classes, path)
    source = ref.state_dict()
    mine = _cnnlab(arch, classes, crop)
    mapping = key_map(source, mine.state_dict(), r.drop, arch)
    mapped = {d: source[s] if s is not None else torch.tensor(0, dtype=torch.long)
              for d, s in mapping.items()}
    mine.load_state_dict(mapped, strict=True, assign=True)
    size = check_size or crop
    size = max(size, *weights.meta.get("min_size", (1, 1)))
    diff = _verify(arch, ref, mine, size, (src_mean, src_std), (mean, std))
    del ref

    new_keys: tuple[str, ...] = ()
    if num_classes is not None and num_classes != classes:
        fresh = _cnnlab(arch, num_classes, crop, meta=False)
        loaded = mine.state_dict()
        state = fresh.state_dict()
        new_keys = tuple(k for k, v in state.items() if loaded[k].shape != v.shape)
        fresh.load_state_dict({k: state[k] if k in new_keys else loaded[k] for k in state})
        mine = fresh

    return LoadedWeights(
        spec=spec, arch=arch, weights_name=weights.name, model_name=r.model,
        options=dict(r.options), model=mine.eval(), input_size=crop, resize_size=resize,
        mean=mean, std=std, interpolation=getattr(tf.interpolation, "value", str(tf.interpolation)),
        categories=categories, num_params=count_params(mine), path=path, url=url,
        max_abs_diff=diff, new_keys=new_keys)
