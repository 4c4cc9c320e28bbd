"""`check_config(cfg)`: the rule table of nsr_lightning/config_rules.py applied to a composed
(fit or evaluate) config right after composing, before any model, data or process; unknown keys
of the closed groups, the objective's own checks, and whether any sample can carry a learning
signal for the objective (`no_signal`) too. Needs omegaconf and Hydra (the rule table itself
does not)."""

from __future__ import annotations

import os
import sys

from nsr_lightning.config_rules import BY_KEY, CROSS, RULES, check_values
from nsr_lightning.errors import ConfigError, UserError

# groups whose every key has a rule in config_rules.RULES: any other key in them is a typo (+algo.lrr=...)
CLOSED = ("algo", "checkpoint", "fsdp", "rollout.sampling", "sampling")


def closest_key(key: str, cfg) -> str:
    """' (did you mean <the closest key of cfg>?)' for a mistyped key, or '' when none is close."""
    import difflib

    from omegaconf import OmegaConf

    flat = []

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            flat.append(prefix + str(name))
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    close = difflib.get_close_matches(key, [k for k in flat if k != key], n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _unknown_keys(cfg) -> None:
    from omegaconf import DictConfig, OmegaConf

    for prefix in CLOSED:
        node = OmegaConf.select(cfg, prefix, default=None)
        known = [k[len(prefix) + 1 :] for k in BY_KEY if k.startswith(prefix + ".")]
        for name in node if isinstance(node, DictConfig) else ():
            if name not in known:
                hint = closest_key(f"{prefix}.{name}", cfg)
                raise ConfigError(
                    f"{prefix}.{name}: unknown config key{hint}; {prefix} has: {', '.join(known)}"
                )


# one setting, two commands: (fit's key, evaluate's key)
SAME_SETTING = (("rollout.n", "n"), ("rollout.sampling", "sampling"))


def check_overrides(command: str, overrides: list[str]) -> None:
    """Overrides that would compose but do nothing or something else: a key with a rule deleted
    (`~algo.lr`: the code's own default would apply), the other command's key for a setting
    (`evaluate rollout.n=64`: evaluate has the rollout group for its engine, its n is `n`)."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if override.startswith("~") and any(k == key or k.startswith(key + ".") for k in BY_KEY):
            what = f"set {key}=<value> ({BY_KEY[key][0]})" if key in BY_KEY else f"set the keys of {key}"
            raise ConfigError(
                f"{override}: {key} cannot be deleted (the code would use a default of its own); {what}"
            )
        for fit_key, evaluate_key in SAME_SETTING:
            wrong, right = (fit_key, evaluate_key) if command == "evaluate" else (evaluate_key, fit_key)
            if key == wrong or key.startswith(wrong + "."):
                raise ConfigError(f"{key}: not used by {command}; set {right + key[len(wrong) :]} instead")


_ABSENT = object()


def _select(cfg, key: str):
    from omegaconf import ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
    except OmegaConfBaseException as e:  # an interpolation that does not resolve, ...
        raise UserError(f"{key}: {str(e).splitlines()[0]}") from None
    return list(value) if isinstance(value, ListConfig) else value


def check_config(cfg) -> None:
    """Every rule whose keys the composed config has, then the objective (pure, cheap to build):
    one UserError naming the key and the accepted values, before anything is loaded."""
    keys = [key for key, _, _ in RULES] + [k for key, others, _, _ in CROSS for k in (key, *others)]
    values = {key: _select(cfg, key) for key in keys}
    check_values({key: value for key, value in values.items() if value is not _ABSENT})
    _unknown_keys(cfg)
    check_context(cfg)
    if "objective" not in cfg:
        return
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    try:
        objective = instantiate(cfg.objective)
    except (ValueError, TypeError, ImportError, HydraException) as e:  # unknown names, Hydra's wrapping
        raise UserError(_innermost(e)) from None
    if "rollout" in cfg:
        sampling = cfg.rollout.sampling
        found = no_signal(objective, cfg.rollout.n, sampling.temperature == 0 or sampling.top_k == 1)
        if found and found[0]:
            raise ConfigError(found[1])
        if found and os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(f"warning: {found[1]}", file=sys.stderr, flush=True)  # once: rank 0 only


def no_signal(objective, n: int, greedy: bool) -> tuple[bool, str] | None:
    """(refused, message) when the rollouts cannot carry the learning signal the objective is
    named for, else None. A group-relative advantage (GRPO, Dr.GRPO, DAPO, NGRPO) compares the n
    responses to a prompt: with rollout.n=1 there is no group (GRPO's family takes A = reward,
    verl's convention; NGRPO takes A = 0); with greedy decoding (temperature 0 or top_k 1) the n
    responses are the same text (both engines decode greedily per row), so every group has one
    reward and A = 0, except that NGRPO's virtual max-reward samples still give an all-wrong
    group a negative advantage. Refused when no sample can move the policy (an entropy bonus
    still can: then a warning); warned when a signal remains but not the objective's own."""
    from nsr_lightning.objectives.grpo import GRPO

    if not isinstance(objective, GRPO) or (n > 1 and not greedy):
        return None
    name, virtual = objective.name, getattr(objective, "virtual_samples", 0)
    if n == 1 and objective.lone_advantage == "reward":
        return False, (
            f"rollout.n=1 with objective={name}: a group of one response has nothing to compare with, so its "
            "advantage is its reward (verl's convention) and this trains as REINFORCE on correct samples, "
            "not group-relative; set rollout.n >= 2 (warned, not refused: a signal remains)"
        )
    if n > 1 and virtual > 0:
        return False, (
            f"greedy rollouts (rollout.sampling.temperature=0 or top_k=1) with objective={name}: the "
            f"{n} responses to a prompt are the same text, so only all-wrong groups learn (through the "
            f"{virtual} virtual max-reward sample{'s' if virtual > 1 else ''}); set rollout.sampling.temperature > 0 for groups that "
            "differ (warned, not refused: a signal remains)"
        )
    why = (
        f"rollout.n=1 with objective={name}: a group of one response gets advantage 0"
        if n == 1
        else f"greedy rollouts (rollout.sampling.temperature=0 or top_k=1) with objective={name}: the {n} "
        "responses to a prompt are the same text, so every group has one reward and every advantage is 0"
    )
    fix = "set rollout.n >= 2" if n == 1 else "set rollout.sampling.temperature > 0 (the paper: 1.0)"
    if objective.entropy_coef > 0:
        return False, f"{why}; only the entropy bonus trains; {fix} (warned, not refused: the entropy bonus)"
    return True, f"{why}: no sample can carry a learning signal; {fix}"


# every response budget of fit (training, pass@k, held-out) and evaluate, and the contexts it must fit in
NEW_TOKENS = (
    "rollout.sampling.max_new_tokens",
    "callbacks.pass_at_k.max_new_tokens",
    "callbacks.heldout.max_new_tokens",
    "sampling.max_new_tokens",
)
CONTEXTS = ("model.max_model_len", "rollout.engine.max_model_len")


def check_context(cfg) -> None:
    """Each max_new_tokens below the context the config names (model=qwen2_5_math_7b: 4,096): the
    prompt needs room too. Models without model.max_model_len are not checked here."""
    limits = [(key, v) for key in CONTEXTS if isinstance(v := _select(cfg, key), int) and v > 0]
    if not limits:
        return
    context, limit = min(limits, key=lambda kv: kv[1])
    for key in NEW_TOKENS:
        value = _select(cfg, key)
        if isinstance(value, int) and value >= limit:
            raise ConfigError(
                f"{key} ({value}) does not fit {context} ({limit}): the prompt needs room too; "
                f"set {key} below {limit} (e.g. {limit * 3 // 4})"
            )


def _innermost(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return str(e).split("Config search path:")[0].strip()
