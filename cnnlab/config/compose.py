"""Compose conf/config.yaml with Hydra overrides (the `aug=[a,b]` list expansion included), then
run every check of cnnlab.config.checks: a config that composes is one a run can start from."""

from __future__ import annotations

from typing import Any

from cnnlab.config.checks import first_line, validate
from cnnlab.config.migration import migrate
from cnnlab.config.schema import GROUPS, RENAMED, Config, conf_dir, group_choices, register_schemas
from cnnlab.errors import UsageError


def compose(overrides: list[str] | None = None) -> Any:
    """Compose conf/config.yaml with Hydra overrides; errors become one-line UsageErrors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hydra.core.global_hydra import GlobalHydra

    overrides = expand_aug_lists(list(overrides or []))
    check_group_overrides(overrides)
    given = {o.partition("=")[0].strip().lstrip("+~") for o in overrides}
    for old, new in RENAMED.items():
        if old in given and new in given:
            raise UsageError(f"set {new}, not both it and {old} (its deprecated name)")
    register_schemas()
    # inside a sweep job Hydra is already initialised (a transfer job composes its pretraining
    # run's config): set the job's Hydra aside while composing, then put it back
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="cnnlab"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean bad input here
        raise UsageError(explain_compose_error(exc)) from exc
    finally:
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)
    migrate(cfg, keep=given)  # an old key from a preset yields to its new name on the command line
    validate(cfg)
    if cfg.transfer.source == "pretrain":  # the pretraining run's config must compose too
        try:
            compose(list(cfg.transfer.pretrain))
        except UsageError as exc:
            raise UsageError(f"transfer.pretrain: {exc}") from exc
    return cfg


def expand_aug_lists(overrides: list[str]) -> list[str]:
    """`aug=[crop,flip,cutout]` composes presets: Hydra merges their parameters in order (later
    presets win), and this adds `aug.ops=` with their ops concatenated in order (each op once)
    and `aug.name=crop+flip+cutout`, unless the overrides set those keys themselves."""
    from omegaconf import OmegaConf

    out = list(overrides)
    for o in overrides:
        key, _, value = o.partition("=")
        value = value.strip()
        if key.strip() != "aug" or not (value.startswith("[") and value.endswith("]")):
            continue
        names = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        choices = group_choices("aug")
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise UsageError(f"unknown aug '{unknown[0]}'; choose from: {', '.join(choices)}")
        if not names:
            raise UsageError("aug=[] names no preset; use aug=none")
        ops: list[str] = []
        for n in names:
            for op in OmegaConf.load(conf_dir() / "aug" / f"{n}.yaml").get("ops", []):
                if op not in ops:
                    ops.append(op)
        if not any(x.startswith(("aug.ops=", "+aug.ops=")) for x in overrides):
            out.append(f"aug.ops=[{','.join(ops)}]")
        if not any(x.startswith(("aug.name=", "+aug.name=")) for x in overrides):
            out.append(f"aug.name={'+'.join(names)}")
    return out


def check_group_overrides(overrides: list[str]) -> None:
    """Name the valid choices when an override picks a group option that does not exist."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        hint = ""
        if any("=" in o.partition("=")[2].partition("[")[2] for o in overrides):
            hint = " (quote list items that contain '=': transfer.pretrain=['data=shapes','trainer.epochs=15'])"
        raise UsageError(f"cannot parse overrides: {first_line(exc)}{hint}") from exc
    for ov in parsed:
        key = ov.key_or_group
        if key not in GROUPS or ov.is_delete():
            continue
        value = ov.value()
        choices = group_choices(key)
        if isinstance(value, list) and key != "aug":
            raise UsageError(f"{key} takes one option, not a list; choose one of: {', '.join(choices)}")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and v not in choices:
                raise UsageError(f"unknown {key} '{v}'; choose from: {', '.join(choices)}")


def explain_compose_error(exc: BaseException) -> str:
    """Turn a Hydra/OmegaConf composition error into one line naming the problem."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        if isinstance(cause, ValidationError):
            return f"bad value for {key}: {first_line(cause)}"
        if isinstance(cause, ConfigKeyError) or "not in" in str(cause):
            return f"unknown key '{key}'{valid_keys_hint(key)}"
    text = first_line(exc)
    if text.startswith("Ambiguous value"):
        return f"{text}: a list of values is a sweep, not one run"
    if "Could not override" in text or "Key '" in text:
        key = text.split("'")[1] if "'" in text else ""
        return f"unknown key '{key}'{valid_keys_hint(key)}"
    return text


def valid_keys_hint(full_key: str) -> str:
    from omegaconf import OmegaConf

    parts = full_key.split(".")
    node: Any = OmegaConf.structured(Config)
    for p in parts[:-1]:
        if p not in node:
            return ""
        node = node[p]
    try:
        keys = list(node.keys())
    except Exception:
        return ""
    prefix = ".".join(parts[:-1])
    where = f" in {prefix}" if prefix else ""
    return f"; valid keys{where}: {', '.join(keys)}"
