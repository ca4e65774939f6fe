"""Compose conf/config.yaml with Hydra overrides (the `aug=[a,b]` list expansion included), then
run every check of cnnlab.config.checks: a config that composes is one a run can start from."""

from __future__ import annotations

import contextlib
import copy
import difflib
from typing import Any

from cnnlab.config.checks import first_line, validate
from cnnlab.config.migration import migrate
from cnnlab.config.schema import GROUPS, RENAMED, Config, conf_dir, group_choices, register_schemas
from cnnlab.errors import UsageError


# While checking a sweep's cells (`checking_cells`): the transfer.pretrain lists that composed
# already. A transfer experiment's cells all name the same pretraining run, so it is composed
# once per check, not once per cell; outside a check nothing is remembered, so a preset or
# variable that changes later is read again.
_PRETRAIN_COMPOSES: set | None = None


@contextlib.contextmanager
def checking_cells():
    """Within: each transfer.pretrain list is composed once (see _PRETRAIN_COMPOSES)."""
    global _PRETRAIN_COMPOSES
    outer = _PRETRAIN_COMPOSES
    if outer is None:
        _PRETRAIN_COMPOSES = set()
    try:
        yield
    finally:
        _PRETRAIN_COMPOSES = outer


def compose(overrides: list[str] | None = None) -> Any:
    """Compose conf/config.yaml with Hydra overrides; errors become one-line UsageErrors."""
    return _compose(overrides, with_hydra=False)[0]


def compose_with_hydra(overrides: list[str] | None = None) -> tuple[Any, Any]:
    """compose()'s config with its interpolations as written (checked as compose checks it), and
    the `hydra` node Hydra composed beside it: what `cnnlab train --cfg all` prints."""
    return _compose(overrides, with_hydra=True)


def _compose(overrides: list[str] | None, with_hydra: bool) -> tuple[Any, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hydra.core.global_hydra import GlobalHydra

    given_overrides = list(overrides or [])
    swept = [ov.input_line for ov in parse_overrides(given_overrides) if ov.is_sweep_override()]
    if swept:
        raise UsageError(f"'{swept[0]}': {sweep_hint(given_overrides)}")
    overrides = expand_aug_lists(given_overrides)
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
            # with Hydra's own node, whose runtime choices name the preset of each group
            cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean bad input here
        raise UsageError(explain_compose_error(exc)) from exc
    finally:
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        hydra_node = cfg.pop("hydra")
    migrate(cfg, keep=given)  # an old key from a preset yields to its new name on the command line
    as_written = copy.deepcopy(cfg) if with_hydra else None
    validate(cfg)  # resolves the config in place
    chosen = OmegaConf.to_container(hydra_node.runtime.choices)
    cfg.choices = {g: chosen[g] for g in GROUPS if g in chosen}
    if cfg.transfer.source == "pretrain":  # the pretraining run's config must compose too
        key = (str(conf_dir()), tuple(cfg.transfer.pretrain))
        if _PRETRAIN_COMPOSES is None or key not in _PRETRAIN_COMPOSES:
            try:
                compose(list(cfg.transfer.pretrain))
            except UsageError as exc:
                raise UsageError(f"transfer.pretrain: {exc}") from exc
            if _PRETRAIN_COMPOSES is not None:
                _PRETRAIN_COMPOSES.add(key)
    return (as_written if with_hydra else cfg), (hydra_node if with_hydra else None)


def sweep_hint(overrides: list[str]) -> str:
    """What a list of values on a one-run command says: it is a sweep, and the command to run it."""
    import shlex

    return (f"a list of values is a sweep: run `cnnlab sweep {shlex.join(overrides)} ...` "
            f"(or `cnnlab train -m ...`)")


def to_yaml(node: Any, resolve: bool = False) -> str:
    """A config as YAML; with `resolve`, every interpolation that can be resolved here is (one
    that only a running job knows, such as ${hydra.job.num}, stays as written)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_resolved(node) if resolve else node))


def _resolved(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    out: Any = {} if isinstance(node, DictConfig) else []
    for k in keys:
        child = node._get_node(k)
        if OmegaConf.is_missing(node, k):
            value: Any = "???"
        elif OmegaConf.is_interpolation(node, k):
            try:
                value = node[k]
                if isinstance(value, (DictConfig, ListConfig)):
                    value = OmegaConf.to_container(value, resolve=True)
            except Exception:  # not resolvable outside a job: keep the interpolation
                value = child._value()
        elif isinstance(child, (DictConfig, ListConfig)):
            value = None if child._is_none() else _resolved(child)
        else:
            value = child._value()
        if isinstance(out, dict):
            out[k] = value
        else:
            out.append(value)
    return out


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
    parsed = parse_overrides(overrides)
    check_added_keys(parsed)
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


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of the overrides; one that does not parse fails alone, with a hint."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(overrides)
    except Exception as exc:
        bad = next((o for o in overrides if not _parses(parser, o)), None)
        raise UsageError(_parse_error(bad, exc)) from exc


def _parses(parser, override: str) -> bool:
    try:
        parser.parse_overrides([override])
    except Exception:
        return False
    return True


def _parse_error(override: str | None, exc: BaseException) -> str:
    """One line on an override Hydra's grammar refuses (None: the list as a whole)."""
    if override is None:
        return f"cannot parse overrides: {first_line(exc)}"
    key, _, value = override.partition("=")
    if not override.isascii() and "'" not in value and '"' not in value:
        # Hydra reads unquoted values as ASCII words; a quoted string may hold anything
        if value.startswith("[") and value.endswith("]"):  # quote each item, not the list
            value = "[" + ",".join(f"'{v.strip()}'" for v in value[1:-1].split(",")) + "]"
        else:
            value = f"'{value}'"
        return (f"cannot parse override '{override}': a value with non-ASCII characters must be "
                f"quoted for Hydra, e.g. \"{key}={value}\" on the command line")
    hint = ""
    if "=" in value.partition("[")[2]:
        hint = " (quote list items that contain '=': transfer.pretrain=['data=shapes','trainer.epochs=15'])"
    return f"cannot parse override '{override}': {first_line(exc)}{hint}"


def check_added_keys(parsed: list) -> None:
    """A key added with + or ++ is one of the schema's: Hydra opens the config for an added key,
    so `+trainer.epochz=3` would otherwise compose (and be ignored). Hydra's own keys, groups
    (`+group=option`), the free dict transfer.resolved and instantiate keys (refused with
    their own message later) are left to Hydra and the checks."""
    from omegaconf import DictConfig, OmegaConf

    from cnnlab.config.checks import INSTANTIATE_KEYS
    from cnnlab.config.schema import ComposeConfig

    schema = None
    for ov in parsed:
        if not (ov.is_add() or ov.is_force_add()):
            continue
        key = ov.key_or_group
        parts = key.split(".")
        if parts[0] == "hydra" or key in GROUPS or parts[-1] in INSTANTIATE_KEYS:
            continue
        schema = schema if schema is not None else OmegaConf.structured(ComposeConfig)
        node = schema
        for i, part in enumerate(parts):
            if not isinstance(node, DictConfig) or OmegaConf.get_type(node) is dict:
                break  # a value, or a free dict: Hydra says the rest
            if part not in node:
                where = ".".join(parts[:i + 1])
                raise UsageError(f"unknown key '{where}' (added with +){valid_keys_hint(where)}")
            node = node[part]


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
    close = difflib.get_close_matches(parts[-1], keys, n=1)
    guess = f" did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
    return f";{guess} valid keys{where}: {', '.join(keys)}"
