"""One config hash for everything that names work by its inputs: resume's match of a config to a
run folder, sweep job folders, cached pretraining sources and cached probe features."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable


def digest(value: Any, length: int = 12) -> str:
    """sha1 of a value's canonical text (a string as it is, anything else as JSON with sorted
    keys), cut to `length` hex digits: the same inputs give the same name in every process."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def config_hash(cfg: Any, ignore: Iterable[tuple[str, ...]] = (), length: int = 12,
                schema: bool = False) -> str:
    """The digest of a config (DictConfig or plain dict), resolved, without the `ignore` key
    paths and without `choices` (which preset names chose the values: the values are the input,
    so `optim=nesterov` and the same keys set one by one name the same work). schema=True first migrates renamed keys and merges it into cnnlab's Config schema, so
    a config read back from a run's config.yaml (also one an earlier version wrote) hashes the
    same as the composed one it was written from."""
    from omegaconf import DictConfig, OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    d = json.loads(json.dumps(d, default=str))  # a copy: the caller's dict is not changed
    if schema:
        from cnnlab.config.migration import migrate
        from cnnlab.config.schema import Config

        d = migrate(d, warn=False)
        d = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(Config), d), resolve=True)
    for path in (("choices",), *ignore):
        node = d
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return digest(d, length)
