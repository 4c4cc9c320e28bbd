"""`check_config(cfg)`: the rule table of nsr_lightning/config_rules.py applied to a composed
(fit or evaluate) config right after composing, before any model, data or process; unknown keys
of the closed groups and the objective's own checks too. Needs omegaconf and Hydra (the rule
table itself does not)."""

from __future__ import annotations

from nsr_lightning.config_rules import BY_KEY, CROSS, RULES, check_values
from nsr_lightning.errors import ConfigError, UserError

# groups whose every key has a rule in config_rules.RULES: any other key in them is a typo (+algo.lrr=...)
CLOSED = ("algo", "checkpoint", "fsdp", "rollout.sampling", "sampling")


def _unknown_keys(cfg) -> None:
    from omegaconf import DictConfig, OmegaConf

    for prefix in CLOSED:
        node = OmegaConf.select(cfg, prefix, default=None)
        known = [k[len(prefix) + 1 :] for k in BY_KEY if k.startswith(prefix + ".")]
        for name in node if isinstance(node, DictConfig) else ():
            if name not in known:
                raise ConfigError(f"{prefix}.{name}: unknown config key; {prefix} has: {', '.join(known)}")


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
        instantiate(cfg.objective)
    except (ValueError, TypeError, ImportError, HydraException) as e:  # unknown names, Hydra's wrapping
        raise UserError(_innermost(e)) from None


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
