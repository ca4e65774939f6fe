"""Renamed config keys (schema.RENAMED) still read for one release: `migrate` moves an old key to
its new name, wherever a config comes from (a composed one, whose command line or preset used the
old name, or the config.yaml of a run written by an earlier version), and says so once per
process in one line on stderr:

    warning: trainer.device is deprecated; use trainer.accelerator (it will be removed in the next release)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from cnnlab.config.schema import RENAMED

_WARNED: set[tuple[str, str]] = set()


def migrate(cfg: Any, source: str | None = None, keep: Iterable[str] = (), warn: bool = True) -> Any:
    """Move the RENAMED keys of `cfg` (a DictConfig or a plain dict) to their new names, in place,
    and return it. A given old key (not None) wins over the new key's value, unless the new key
    is in `keep` (set on the command line beside an old key from a preset). `source` names the
    file the config came from in the warning; warn=False migrates silently (hashing old runs)."""
    keep = set(keep)
    for old, new in RENAMED.items():
        group, old_key = old.split(".")
        new_key = new.split(".")[1]
        node = cfg.get(group) if hasattr(cfg, "get") else None
        if node is None or not hasattr(node, "get") or old_key not in node:
            continue
        value = _pop(node, old_key)
        if value is None:
            continue  # the compose schema's placeholder: the old key was not given
        if new not in keep:
            node[new_key] = value
        if warn:
            _warn(old, new, source)
    return cfg


def load_config(path: str | Path, warn: bool = True) -> Any:
    """A run's saved config.yaml, migrated and typed by the Config schema."""
    from omegaconf import OmegaConf

    from cnnlab.config.schema import Config

    raw = migrate(OmegaConf.load(path), source=str(path), warn=warn)
    return OmegaConf.merge(OmegaConf.structured(Config), raw)


def _pop(node: Any, key: str) -> Any:
    from omegaconf import DictConfig, open_dict

    if isinstance(node, DictConfig):
        with open_dict(node):  # typed (dataclass) nodes refuse deletion in struct mode
            return node.pop(key)
    return node.pop(key)


def _warn(old: str, new: str, source: str | None) -> None:
    if (old, source or "") in _WARNED:
        return
    _WARNED.add((old, source or ""))
    where = f" (in {source})" if source else ""
    print(f"warning: {old} is deprecated{where}; use {new} (it will be removed in the next release)",
          file=sys.stderr)
