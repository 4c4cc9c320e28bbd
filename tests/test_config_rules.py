"""The rule table (nsr_lightning/config_rules.py): every shipped config passes it, every rule
refuses a bad value with one error naming the key and what it accepts."""

import math
from functools import cache
from importlib.resources import files

import pytest
from omegaconf import OmegaConf

from nsr_lightning.cli import compose, load_config
from nsr_lightning.config_rules import BY_KEY, CROSS, RULES, check, check_config
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


COMPOSITIONS = [("fit", []), ("evaluate", [])] + [
    (command, [f"{group}={option}"]) for command in ("fit", "evaluate") for group in groups(command)
    for option in options(group)
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
}


@pytest.mark.parametrize("key, others", [(key, others) for key, others, _, _ in CROSS])
def test_every_cross_rule_refuses_a_bad_combination(key, others):
    with pytest.raises(UserError) as info:
        load_config("fit", [*CROSS_BAD[key], RUN_DIR])
    assert key in str(info.value) and all(other in str(info.value) for other in others)


@pytest.mark.parametrize("option", options("objective"))
def test_every_objective_knob_has_a_rule(option):
    knobs = composed("fit", (f"objective={option}",)).objective
    assert [k for k in knobs if k not in ("_target_", "name") and f"objective.{k}" not in BY_KEY] == []
