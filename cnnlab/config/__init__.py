"""cnnlab's configuration: the schema (one dataclass per config group), compose (Hydra over
conf/, with `aug=[a,b]` lists), checks (every range and combination, run at compose time) and
migrate (renamed keys still read for one release, also from earlier runs' config.yaml).

    from cnnlab.config import compose, load_config
    cfg = compose(["model=lenet5", "trainer.epochs=5"])
    old = load_config("outputs/runs/<id>/config.yaml")
"""

from cnnlab.config.checks import first_line, validate  # noqa: F401
from cnnlab.config.migration import load_config, migrate  # noqa: F401
from cnnlab.config.compose import (  # noqa: F401
    check_group_overrides, compose, compose_with_hydra, expand_aug_lists, explain_compose_error,
    sweep_hint, to_yaml, valid_keys_hint)
from cnnlab.config.schema import (  # noqa: F401
    GROUPS, RENAMED, AugConfig, Config, DataConfig, EvalConfig, ModelConfig, OptimConfig, PrecisionConfig,
    SchedConfig, TrainerConfig, TransferConfig, conf_dir, group_choices, register_schemas)
