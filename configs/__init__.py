"""Hydra config groups, shipped as `nsr_lightning.configs`.

Importing this package (Hydra does, to read it) also registers one node per objective class,
`objective_class/<Class>`: its `_target_` and every keyword default of its `__init__` and its
bases'. Each configs/objective/*.yaml starts from one of them and sets only what makes that
option (its name, NSR's lambda_pos 0, ...), so an objective's defaults live only in its class.
"""

from __future__ import annotations

import inspect


def class_defaults(cls: type) -> dict:
    """The keyword defaults of `cls.__init__` and of its bases' (a subclass's win): the values an
    objective gets for what it is not given, as its constructors pass `**shared` upwards."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.default is not param.empty:
                defaults[param.name] = param.default
    return defaults


def register_objective_classes() -> None:
    from hydra.core.config_store import ConfigStore

    from nsr_lightning import objectives

    store = ConfigStore.instance()
    for name in ("Reinforce", "GRPO", "DrGRPO", "NGRPO", "DAPO", "PPO"):
        node = {"_target_": f"nsr_lightning.objectives.{name}", **class_defaults(getattr(objectives, name))}
        store.store(group="objective_class", name=name, node=node)


register_objective_classes()
