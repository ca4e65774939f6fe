"""Config schemas: one dataclass per config group, registered in Hydra's ConfigStore, so OmegaConf
checks keys and types while Hydra composes (an unknown key or a value of the wrong type fails
before anything runs). Also where conf/ is and which options each group has."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from cnnlab.errors import UsageError

GROUPS = ("data", "model", "aug", "optim", "sched", "trainer", "precision", "transfer", "eval", "reg")


@dataclass
class DataConfig:
    name: str = "digits"
    root: Optional[str] = "data"  # where real datasets live (`cnnlab data fetch` puts them here)
    val_fraction: float = 0.1  # carved from the training split, stratified
    test_fraction: float = 0.2  # only for datasets without an official test split
    train_per_class: Optional[int] = None  # keep N training images per class
    train_fraction: Optional[float] = None  # keep this fraction of each class
    # keep only these classes, relabelled 0..k-1 in the order listed (class names kept), before
    # any split: e.g. [0,1,2,3,4] for Fashion-MNIST's tops (a transfer source), [5,...,9] the rest
    classes: Optional[List[int]] = None
    split_seed: int = 0  # fixes every split and subset, independent of the run seed
    image_size: Optional[int] = None  # resize to this side (None: the dataset's own size)
    num_train: Optional[int] = None  # generated datasets: images in the train pool
    num_test: Optional[int] = None  # generated datasets: images in the test split
    in_memory: str = "auto"  # auto | true | false (false streams through a DataLoader)
    max_memory_gb: float = 4.0  # auto: hold in memory when the uint8 tensor fits in this
    workers: int = 2  # decoding processes for image folders
    mean: Optional[List[float]] = None  # None: computed from the training split
    std: Optional[List[float]] = None
    on_bad_image: str = "raise"  # image folders: raise on an undecodable file | skip it (logged)


@dataclass
class ModelConfig:
    # None means "the family's own default", so a family only receives what the user set.
    name: str = "resnet8"
    norm: Optional[str] = None
    norm_groups: Optional[int] = None
    act: Optional[str] = None
    width: Optional[float] = None
    dropout: Optional[float] = None
    stem: Optional[str] = None  # cifar (small inputs) | imagenet (224); None: chosen from the input size
    pool: Optional[str] = None
    variant: Optional[str] = None  # a family's published variants (e.g. alexnet paper | owt)
    lrn: Optional[bool] = None  # local response normalisation (AlexNet)
    groups: Optional[int] = None  # grouped convolutions (AlexNet's two-GPU split: 2)
    bottleneck: Optional[bool] = None  # 1x1 bottlenecks (GoogLeNet's inception module)
    aux: Optional[bool] = None  # auxiliary classifier heads (GoogLeNet)
    growth_rate: Optional[int] = None  # DenseNet
    compression: Optional[float] = None  # DenseNet transitions
    memory_efficient: Optional[bool] = None  # DenseNet gradient checkpointing
    expansion: Optional[int] = None  # MobileNetV2 inverted-residual expansion
    drop_path: Optional[float] = None  # EfficientNet stochastic depth
    padding: Optional[str] = None  # EfficientNet: same (TensorFlow) | symmetric
    block: Optional[str] = None  # DesignNet's conv block design (7x7, 3x3x3, bottleneck, ...)


@dataclass
class AugConfig:
    # Ops run in list order on the whole batch (see cnnlab/data/augment.py for each op's definition).
    name: str = "none"
    ops: List[str] = field(default_factory=list)
    flip_p: float = 0.5  # horizontal mirror probability (Krizhevsky et al. 2012, sec. 4.1)
    crop_padding: int = 4  # zero pad, then crop back (He et al. 2016, sec. 4.2: 4 px on CIFAR)
    # 0: crop back to the image size; N: random N x N crops, and the model trains and is tested on
    # N x N inputs (AlexNet's 224 of 256, Krizhevsky et al. 2012, sec. 4.1; 28 of 32 for CIFAR)
    crop_size: int = 0
    # random-resized-crop: torchvision RandomResizedCrop defaults, from Szegedy et al. 2015, sec. 6
    scale_min: float = 0.08  # fraction of the image area kept, lower bound
    scale_max: float = 1.0
    ratio_min: float = 0.75  # crop aspect ratio w/h, drawn log-uniformly in [3/4, 4/3]
    ratio_max: float = 1.3333333333333333
    # colour jitter: factor ~ U[max(0, 1 - s), 1 + s] as torchvision ColorJitter defines it;
    # 0.4 each as in fb.resnet.torch's ImageNet recipe (Gross & Wilber 2016)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    pca_std: float = 0.1  # PCA lighting: alpha ~ N(0, 0.1) (Krizhevsky et al. 2012, sec. 4.1)
    cutout_size: int = 16  # 16 on CIFAR-10, 8 on CIFAR-100 (DeVries & Taylor 2017, sec. 4)
    mixup_alpha: float = 0.2  # Beta(a, a); 0.1-0.4 on ImageNet (Zhang et al. 2018, sec. 3.1)
    cutmix_alpha: float = 1.0  # lambda ~ Beta(1, 1) = U(0, 1) (Yun et al. 2019, sec. 4)
    mix_mode: str = "sample"  # sample: lambda per image | batch: one per batch (Zhang's code)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_norm_bias: bool = True  # exclude norm weights and biases from weight decay
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    alpha: float = 0.99  # RMSprop smoothing constant
    rho: float = 0.9  # Adadelta decay


@dataclass
class SchedConfig:
    name: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    step_size: int = 30  # step: epochs between decays
    milestones: List[int] = field(default_factory=lambda: [30, 60, 90])
    gamma: float = 0.1
    pct_start: float = 0.25  # onecycle: share of steps spent warming up
    factor: float = 0.1  # plateau: AlexNet divides the lr by 10 when val error stalls
    patience: int = 3  # plateau: epochs without improvement before decaying


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 64  # per process: a run of trainer.devices=N steps on N x batch_size images
    eval_batch_size: int = 512
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    early_stop: int = 0  # stop after this many epochs without improvement; 0 disables
    monitor: str = "val_acc"  # val_acc | val_loss: picks the best checkpoint and drives early stop
    test_on: str = "best"  # best | last: which weights the test set is evaluated on
    # the kind of device: auto | cpu | cuda | cuda:N | mps (renamed from trainer.device, so it is
    # not mistaken for trainer.devices, the process count below)
    accelerator: str = "auto"
    # data-parallel processes: N >= 1, or auto (one per CUDA GPU, 1 without CUDA). N > 1 starts
    # N processes through torch.distributed's elastic launcher (cnnlab/training/distributed.py); under
    # torchrun or srun it must be auto or their world size. Any: an int or the string auto.
    devices: Any = 1
    sync_bn: bool = False  # devices > 1: batch norm over the global batch (SyncBatchNorm; CUDA)
    # none | linear: optim.lr x processes, for the N x larger global batch (Goyal et al. 2017,
    # "Accurate, large minibatch SGD", sec. 2.1; pair it with sched.warmup_epochs, their 5)
    lr_scaling: str = "none"
    # torch intra-op threads on CPU: auto (from the CPUs this process may use, the processes
    # sharing them and how busy the machine is at the start: cnnlab/threads.py), N, or 0 for
    # torch's default (one per core). Any: an int or the string auto
    threads: Any = "auto"
    deterministic: bool = True
    # NHWC activations and weights: auto = on where it is measured faster (CPU oneDNN convs, and
    # CUDA under 16-bit precision, whose tensor-core kernels are NHWC), off for fp64 and CUDA
    # fp32; see README "Precision, several processes and training speed" for the measurement
    channels_last: Any = "auto"
    # torch.compile the model's forward (nn.Module.compile: checkpoints keep their keys). Off by
    # default: compiling costs tens of seconds per run and needs a C++ compiler on CPU
    compile: bool = False
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune (torch.compile's)
    compile_backend: str = "inductor"  # torch.compile's backend (aot_eager: no code generation)
    progress: str = "auto"  # auto | rich | plain | none
    # what a run logs beside metrics.csv (always written): tensorboard (event files in <run>/tb/:
    # scalars per epoch, the config, the test scores and confusion matrix) | csv (metrics.csv
    # alone) | none (the same: no tracker) | auto: tensorboard when its package is importable
    logger: str = "auto"
    checkpoints: bool = True
    # a non-finite loss: stop (status diverged) | skip the step | rollback to the last good
    # epoch with the lr halved, at most max_rollbacks times, then stop
    on_nan: str = "stop"
    max_rollbacks: int = 3
    # train_loss/train_acc are measured after each epoch in eval mode on this many training
    # images, un-augmented, at the validation view: the first N of a permutation seeded with
    # data.split_seed, so every run and epoch of a sweep scores the same images (the running
    # train-mode averages are kept as running_loss/running_acc). auto: as many as the
    # validation split has, so both numbers carry similar sampling noise, but at least 1000
    # (a standard error under 1.6 points) when the training split has that many; never more
    # than the training split. 0: off, train_* are the running averages. Any: an int or auto.
    train_eval_size: Any = "auto"


@dataclass
class PrecisionConfig:
    # Number formats of a run (cnnlab/training/precision.py); the presets in conf/precision/ set these.
    name: str = "fp32"
    dtype: str = "float32"  # the weights': float64 | float32 | bfloat16 | float16 (16: "pure")
    amp_dtype: Optional[str] = None  # autocast forward+loss in bfloat16 | float16; null: off
    tf32: bool = False  # CUDA: matmuls and convs on TF32 tensor cores; plain fp32 elsewhere
    # dynamic (torch.amp.GradScaler; skips inf/nan steps) | none. Renamed from precision.loss_scale:
    # `loss_scale` is the float a run records (the results column, Precision.loss_scale)
    scaler: str = "none"
    init_scale: float = 65536.0  # first dynamic loss scale: 2**16, GradScaler's default
    growth_interval: int = 2000  # steps without overflow before the scale doubles (GradScaler's)
    # 16-bit weights: the fp32 update lands on the 16-bit grid to nearest, or stochastically
    # (up with probability proportional to the distance; Gupta et al. 2015, sec. 3)
    rounding: str = "nearest"  # nearest | stochastic


@dataclass
class TransferConfig:
    # What the model starts from and which of its parameters train (cnnlab/transfer/).
    name: str = "scratch"  # scratch | linear_probe | finetune_top | finetune_all | multi_probe
    # a cnnlab run folder or checkpoint, torchvision:<arch>.<WEIGHTS>, imagenet_lite0, or
    # pretrain (train cfg.model on `pretrain` overrides once, cached under outputs/cache)
    source: Optional[str] = None
    pretrain: List[str] = field(default_factory=list)  # overrides of the pretraining run
    # learning-rate multipliers from the new head down: [head, top group, ..., bottom group];
    # the backbone's layers split into len-1 contiguous groups (the lecture's 1 / 0.1 / 0.01)
    lr_mult: List[float] = field(default_factory=lambda: [1.0])
    unfreeze: int = 2  # finetune_top: how many of the last backbone layers train
    resize: Optional[int] = None  # input side the source sees (default: the source's own)
    probe_c: List[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # probes' C grid
    probe_layers: int = 4  # multi_probe: how many depths, evenly spaced, the last included
    # filled in by cnnlab when a run starts (so `eval` rebuilds the model without the source)
    resolved: Dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    # Test-time views (cnnlab/evaluation/): `cnnlab eval RUN` scores every mode of `views`; a
    # training run's test pass (its test_acc) scores the first. The other keys are `cnnlab eval`'s.
    name: str = "center"  # the preset's name: the results table's `eval` column
    # a mode or a list of them: center | fivecrop (no mirror) | tencrop | multiscale:S1,S2,... In a list Hydra splits
    # multiscale's sizes into items of their own; they are joined again, so
    # eval.views=[center,multiscale:28,32,36] is two modes. Any: a string or a list (earlier
    # runs' config.yaml hold a string)
    views: Any = "center"
    average: str = "softmax"  # views averaged as softmax probabilities | logits (Krizhevsky 2012: softmax)
    crop: Optional[int] = None  # view side; None: the run's training input size (aug.crop_size or the image)
    split: str = "test"  # test | val
    chunk: Optional[int] = None  # most views per forward pass; None: trainer.eval_batch_size


@dataclass
class Config:
    seed: int = 0
    outputs: str = "outputs"
    tag: Optional[str] = None  # free-form label stored in the results table
    reg: str = "none"  # the conf/reg/ preset applied (it sets keys of other groups), for the tables
    resume: Optional[str] = None  # auto (newest unfinished run of this config) | a run folder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # the preset chosen per config group (Hydra's runtime choices: optim=nesterov), kept for the
    # results table's short columns; a record of how the config was named, not an input, so
    # cnnlab.config.hashing.config_hash leaves it out
    choices: Optional[Dict[str, Any]] = None


def conf_dir() -> Path:
    """The conf/ folder: $CNNLAB_CONF, the repository's conf/, or the copy inside a wheel."""
    env = os.environ.get("CNNLAB_CONF")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[1]  # the cnnlab package
    for candidate in (here.parent / "conf", here / "_conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise UsageError("cannot find cnnlab's conf/ folder; set CNNLAB_CONF to its path")


def group_choices(group: str) -> list[str]:
    """Names of the options of a config group (the YAML files in conf/<group>/)."""
    folder = conf_dir() / group
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


# Keys renamed in this release, old -> new. The old names are still read for one release (on the
# command line, in presets and in the config.yaml of earlier runs): migrate() in
# cnnlab/config/migration.py moves them to the new names with a one-line warning.
RENAMED = {"trainer.device": "trainer.accelerator", "precision.loss_scale": "precision.scaler"}


@dataclass
class LegacyTrainerConfig(TrainerConfig):
    device: Optional[str] = None  # old name of trainer.accelerator (None: not given)


@dataclass
class LegacyPrecisionConfig(PrecisionConfig):
    loss_scale: Optional[str] = None  # old name of precision.scaler (None: not given)


@dataclass
class ComposeConfig(Config):
    """The schema Hydra composes with: Config plus the RENAMED keys' old names, so an old key
    is read rather than refused; migrate() then moves it to its new name and drops the old."""
    trainer: LegacyTrainerConfig = field(default_factory=LegacyTrainerConfig)
    precision: LegacyPrecisionConfig = field(default_factory=LegacyPrecisionConfig)


def register_schemas() -> None:
    """Put the schema into Hydra's ConfigStore, once: storing turns the dataclasses into a
    config again each time, about a sixth of a compose."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    if "cnnlab_schema.yaml" not in store.repo:
        store.store(name="cnnlab_schema", node=ComposeConfig)
