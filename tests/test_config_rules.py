"""The rule table (nsr_lightning/config_rules.py): every shipped config passes it, every rule
refuses a bad value with one error naming the key and what it accepts, and each default has one
home (the objective classes for objective knobs, the YAML for the rest)."""

import importlib
import math
from functools import cache
from importlib.resources import files

import pytest
from nsr_lightning.configs import class_defaults
from omegaconf import OmegaConf

from nsr_lightning.cli import compose, load_config
from nsr_lightning.config_check import check_config
from nsr_lightning.config_rules import BY_KEY, CROSS, RULES, check
from nsr_lightning.errors import ConfigError, UserError

CONFIGS = files("nsr_lightning.configs")
RUN_DIR = "run_dir=/tmp/unused"
BAD_CANDIDATES = [-1, 0, 2.5, "abc", None, True, [0.9], math.nan]


def groups(command: str) -> list[str]:
    """The config groups `command`.yaml's defaults list names."""
    entries = OmegaConf.load(str(CONFIGS.joinpath(f"{command}.yaml"))).defaults
    return [name for entry in entries if OmegaConf.is_dict(entry) for name in entry]


def options(group: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in CONFIGS.joinpath(group).iterdir() if p.suffix == ".yaml"
    )


PAIRED = {"data=math": ["reward=math"]}  # options shipped to be used together (a CROSS rule says so)
COMPOSITIONS = [("fit", []), ("evaluate", [])] + [
    (command, [f"{group}={option}", *PAIRED.get(f"{group}={option}", [])])
    for command in ("fit", "evaluate") for group in groups(command) for option in options(group)
]  # fmt: skip


@cache
def composed(command: str, overrides: tuple[str, ...]):
    return compose(command, [*overrides, RUN_DIR])


def has(cfg, key: str) -> bool:
    return OmegaConf.select(cfg, key, default=KeyError, throw_on_resolution_failure=False) is not KeyError


def where(key: str) -> tuple[str, list[str], str]:
    """The first shipped composition that has `key` (else fit's, the key added with '+')."""
    for command, overrides in COMPOSITIONS:
        if has(composed(command, tuple(overrides)), key):
            return command, overrides, key
    return "fit", [], "+" + key


def render(value) -> str:
    return {None: "null", True: "true"}.get(value, str(value)) if not isinstance(value, list) else str(value)


@pytest.mark.parametrize(
    "command, overrides", COMPOSITIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_every_shipped_option_passes_the_rules(command, overrides):
    check_config(composed(command, tuple(overrides)))


@pytest.mark.parametrize("key", [key for key, _, _ in RULES])
def test_every_rule_refuses_a_bad_value_naming_key_and_accepted_values(key):
    accepted = BY_KEY[key][0]
    refused = []
    for value in BAD_CANDIDATES:
        try:
            check(key, value)
        except ConfigError as e:  # from Python: one ConfigError, a ValueError too
            assert isinstance(e, ValueError) and key in str(e) and accepted in str(e)
            refused.append(value)
    assert refused, f"{key}: no bad value refused"
    command, overrides, override = where(key)  # from the command line: one UserError, before any load
    with pytest.raises(UserError) as info:
        load_config(command, [*overrides, f"{override}={render(refused[0])}", RUN_DIR])
    assert f"{key} must be {accepted}; got" in str(info.value)


CROSS_BAD = {
    "data.max_terms": ["data.min_terms=4", "data.max_terms=3"],
    "data.num_train_problems": ["data.num_train_problems=8"],  # data.batch_size 16
    "algo.mini_batch_size": ["algo.mini_batch_size=129"],  # 16 prompts x 8 samples
    "objective.lambda_pos": ["objective.lambda_pos=0", "objective.lambda_neg=0"],
    "objective.dynamic_sampling": ["objective=dapo", "objective.drop_all_wrong_groups=false"]
    + ["objective.drop_all_correct_groups=false"],
    "model.dtype": ["model.dtype=float16", "trainer.accelerator=cpu"],
    "device": ("evaluate", ["model.dtype=float16", "device=cpu"]),
    "reward": ["data=math", "reward=synthetic"],
    "algo.diagnostics_every_n_steps": ["trainer=fsdp_cpu", "algo.diagnostics_every_n_steps=1"],
}


@pytest.mark.parametrize("key, others", [(key, others) for key, others, _, _ in CROSS])
def test_every_cross_rule_refuses_a_bad_combination(key, others):
    command, bad = CROSS_BAD[key] if isinstance(CROSS_BAD[key], tuple) else ("fit", CROSS_BAD[key])
    with pytest.raises(UserError) as info:
        load_config(command, [*bad, RUN_DIR])
    assert key in str(info.value) and all(other in str(info.value) for other in others)


@pytest.mark.parametrize("option", options("objective"))
def test_every_objective_knob_has_a_rule(option):
    knobs = composed("fit", (f"objective={option}",)).objective
    assert [k for k in knobs if k not in ("_target_", "name") and f"objective.{k}" not in BY_KEY] == []


def target(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("option", options("objective"))
def test_objective_options_restate_no_class_default(option):
    raw = OmegaConf.to_container(OmegaConf.load(str(CONFIGS.joinpath("objective", f"{option}.yaml"))))
    defaults = class_defaults(target(composed("fit", (f"objective={option}",)).objective._target_))
    restated = [k for k in raw if k != "defaults" and k in defaults and raw[k] == defaults[k]]
    assert restated == [], f"objective/{option}.yaml restates its class's defaults: {restated}"


# YAML value vs Python default that still differ; the YAML is the home, the Python default goes
# (their files belong to other work: data/datamodule.py, callbacks/pass_at_k.py, rollout/*, module.py)
def python_defaults(cfg) -> dict:
    """Hydra key -> (YAML value, Python default) for every nsr_lightning object the config builds
    from a mapping of its own (a `_target_`; rollout.n, *sampling, algo), objectives aside."""
    from nsr_lightning.callbacks import RolloutCallback

    from nsr_lightning.module import RLVRModule
    from nsr_lightning.rollout import SamplingConfig
    from nsr_lightning.update import UpdateSettings

    built = {"rollout": RolloutCallback, "rollout.sampling": SamplingConfig, "sampling": SamplingConfig}
    built["algo"] = RLVRModule  # and its update's settings (below)
    for key in ("data", "rollout.engine", "reward", *(f"callbacks.{c}" for c in cfg.get("callbacks", {}))):
        path = OmegaConf.select(cfg, f"{key}._target_", default=None)
        if path and path.startswith("nsr_lightning."):
            built[key] = target(path)
    pairs = {}
    for key, cls in built.items():
        node, defaults = OmegaConf.select(cfg, key), class_defaults(cls)
        if cls is RLVRModule:
            defaults |= class_defaults(UpdateSettings)
        for name in node or {}:  # a nested mapping is compared on its own
            if (
                name in defaults
                and not OmegaConf.is_interpolation(node, name)
                and not OmegaConf.is_dict(node[name])
            ):
                pairs[f"{key}.{name}"] = (OmegaConf.to_object(node)[name], defaults[name])
    return pairs


def same(yaml_value, python_default) -> bool:
    return yaml_value == (list(python_default) if isinstance(python_default, tuple) else python_default)


def test_python_defaults_equal_the_yaml():
    seen = {}
    for command, overrides in COMPOSITIONS:
        if not any(o.startswith(("experiment=", "preset=")) for o in overrides):  # those choose, on purpose
            seen |= {
                k: v for k, v in python_defaults(composed(command, tuple(overrides))).items() if not same(*v)
            }
    assert seen == {}  # one default per key: the YAML's and the constructor's agree
