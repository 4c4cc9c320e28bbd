"""Every config value's check, once: one table keyed by the Hydra key.

- `RULES`: (key, accepted, test) for one value. A refused value is one `ConfigError` (a UserError
  and a ValueError) reading "<key> must be <accepted>; got <value!r>".
- `CROSS`: rules between keys (data.max_terms >= data.min_terms, a mini-batch no larger than the
  batch, dynamic sampling needs a group filter, ...), each once.
- `check_config(cfg)` (nsr_lightning/config_check.py): every rule whose keys the composed config
  (fit or evaluate) has, right after composing, before any model, data or process.
- `check(key, value)` / `check_group(prefix, values)`: the same rules for the constructors that
  must also be safe when used from Python (objectives, SamplingConfig, the callbacks, the data
  modules, engines, rewards, checkpoints); none of them writes its own comparison or message.

Defaults, one home each: an objective's knobs default in its class's signature
(nsr_lightning/objectives/); each configs/objective/*.yaml takes them from there through a node
generated from that signature (nsr_lightning/configs/__init__.py) and sets only what makes the
option (its name, NSR's lambda_pos 0, ...). Every other default lives in the YAML under configs/;
a Python default of the same value must equal it (tests/test_config_rules.py holds the list of
those that still differ, for their owners to remove).
"""

from __future__ import annotations

from nsr_lightning.config_kinds import (
    BETAS,
    BOOL,
    FINITE,
    PATH_OR_NULL,
    SAMPLING,
    between,
    device_ok,
    float16_on_cpu,
    integer,
    is_int,
    is_number,
    number,
    one_of,
    or_null,
    under,
)
from nsr_lightning.errors import ConfigError

# accepted names, also used by the code that acts on them (objectives/functional.py, models.py)
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


# key, accepted (said in the message), test; a key absent from the config is not checked
RULES = [
    ("seed", *integer(0)),
    ("float32_matmul_precision", *one_of("highest", "high", "medium")),
    ("model.dtype", *one_of(*DTYPE_NAMES)),
    ("fsdp.param_dtype", *one_of(*DTYPE_NAMES)),
    ("fsdp.reduce_dtype", *one_of(*DTYPE_NAMES)),
    ("fsdp.reshard_after_forward", *BOOL),
    ("algo.lr", *number(0, above=True)),
    ("algo.weight_decay", *number(0)),
    ("algo.betas", *BETAS),
    ("algo.mini_batch_size", *integer(0, "0 = the whole batch")),
    ("algo.micro_batch_size", *integer(0, "0 = the whole mini-batch")),
    ("algo.ppo_epochs", *integer(1)),
    ("algo.max_grad_norm", *number(0, above=True)),
    ("algo.max_bad_updates_in_a_row", *integer(1)),
    ("algo.logprob_chunk_size", *integer(1)),
    ("algo.logprob_check_rows", *integer(0, "0 = off")),
    ("algo.share_prompts", *BOOL),
    ("algo.gradient_checkpointing", *BOOL),
    ("algo.entropy_of_all_responses", *BOOL),
    ("algo.diagnostics_every_n_steps", *integer(0, "0 = off")),
    ("data.batch_size", *integer(1)),
    ("data.num_train_problems", "an integer >= data.batch_size", lambda v: is_int(v) and v >= 1),
    ("data.num_heldout_problems", *integer(0)),
    ("data.min_terms", *integer(2)),
    ("data.max_terms", "an integer >= data.min_terms", lambda v: is_int(v) and v >= 2),
    ("data.max_value", *integer(1)),
    ("data.max_heldout_problems", *or_null(integer(1), "all")),
    ("data.num_workers", *integer(0)),
    ("data.limit", *or_null(integer(1), "all")),
    ("data.synthetic_problems", *integer(1)),
    ("data.synthetic_seed", *integer(0)),
    ("rollout.n", *integer(1)),
    *under("rollout.sampling", SAMPLING),
    ("rollout.correction.enabled", *BOOL),
    ("rollout.correction.token_cap", *number(1)),
    ("rollout.correction.sequence_cap", *or_null(number(1, above=True), "off")),
    ("rollout.engine.batch_size", *integer(1)),
    ("rollout.engine.gpu_memory_utilization", *between(0, 1, "(]")),
    ("rollout.engine.sleep_level", *one_of(1, 2)),
    ("n", *integer(1)),
    ("device", "auto, cpu, or cuda / cuda:N on a machine with a CUDA GPU", device_ok),
    (
        "data.datasets",
        "a non-empty list of data set names",
        lambda v: bool(v) and all(isinstance(x, str) for x in v),
    ),
    ("chunk_size", *or_null(integer(1), "rollout.engine.batch_size // n")),
    *under("sampling", SAMPLING),
    ("reward.num_workers", *or_null(integer(1), "the CPU count, at most 4")),
    ("reward.timeout_s", *number(0, above=True)),
    ("reward.max_answer_chars", *integer(1)),
    ("reward.chunk_size", *integer(1)),
    ("reward.cache_size", *integer(0, "0 = no cache")),
    ("reward.memory_limit_mb", *integer(0, "0 = no limit")),
    ("checkpoint.every_n_steps", *integer(0, "0 = only at the end")),
    ("checkpoint.keep", *integer(1)),
    ("checkpoint.weights_only", *BOOL),
    ("trainer.max_steps", "an integer >= 1, or -1 (no limit)", lambda v: is_int(v) and (v >= 1 or v == -1)),
    ("callbacks.pass_at_k.n", *integer(1)),
    ("callbacks.pass_at_k.every_n_steps", *integer(0, "0 = off")),
    ("callbacks.pass_at_k.before", *BOOL),
    ("callbacks.pass_at_k.after", *BOOL),
    *under("callbacks.pass_at_k", {k: v for k, v in SAMPLING.items() if k != "max_new_tokens"}),
    ("callbacks.pass_at_k.max_new_tokens", *or_null(integer(1), "rollout.sampling.max_new_tokens")),
    ("callbacks.heldout.every_n_steps", ">= 0 (an integer; 0 = off)", integer(0)[1]),  # tests' wording
    ("callbacks.heldout.num_problems", *integer(1)),
    ("callbacks.heldout.entropy_samples", *integer(0, "0 = accuracy only")),
    ("callbacks.heldout.temperature", *SAMPLING["temperature"]),
    ("callbacks.heldout.max_new_tokens", *or_null(integer(1), "rollout.sampling.max_new_tokens")),
    ("objective.lambda_pos", *number(0, noun=FINITE, note="0 drops correct samples")),
    ("objective.lambda_neg", *number(0, noun=FINITE, note="0 drops incorrect samples")),
    ("objective.clip_ratio_low", *between(0, 1, "[)", noun=FINITE)),
    ("objective.clip_ratio_high", *number(0, noun=FINITE)),
    ("objective.entropy_coef", *number(0, noun=FINITE)),
    ("objective.kl_coef", *number(0, noun=FINITE, note="0 = no reference model")),
    ("objective.kl_estimator", *one_of(*KL_ESTIMATORS)),
    ("objective.loss_agg_mode", *one_of(*LOSS_AGG_MODES)),
    ("objective.norm_length", *or_null(integer(1), "the padded length")),
    ("objective.drop_all_correct_groups", *BOOL),
    ("objective.drop_all_wrong_groups", *BOOL),
    ("objective.dynamic_sampling", *BOOL),
    ("objective.max_sampling_rounds", *integer(1)),
    ("objective.std_normalize", *BOOL),
    ("objective.adv_eps", *number(0, above=True, noun=FINITE)),
    ("objective.virtual_samples", *integer(0)),
    ("objective.virtual_reward", FINITE, is_number),
    ("objective.critic_lr", *number(0, above=True, noun=FINITE)),
    ("objective.critic_model_path", *PATH_OR_NULL),
    ("objective.gamma", *between(0, 1, noun=FINITE)),
    ("objective.gae_lambda", *between(0, 1, noun=FINITE)),
    ("objective.value_clip", *number(0, noun=FINITE, note="0 = off")),
    ("objective.kl_penalty_coef", *number(0, noun=FINITE)),
    ("objective.kl_penalty_estimator", *one_of(*KL_ESTIMATORS)),
    ("objective.whiten_advantages", *BOOL),
]
BY_KEY = {key: (accepted, ok) for key, accepted, ok in RULES}


def must(key: str, accepted: str, value) -> str:
    return f"{key} must be {accepted}; got {value!r}"


def _mini_batch(mini: int, batch: int, n: int) -> str:
    return (
        f"algo.mini_batch_size ({mini}) is larger than the batch: data.batch_size x rollout.n = "
        f"{batch * n} samples per rank; accepted: 0 (the whole batch) to {batch * n}"
    )


def sharded_diagnostics(every) -> str:
    """The refusal of per-sign diagnostics under multi-rank FSDP2 (the config rule's and Update's)."""
    return (
        "algo.diagnostics_every_n_steps must be 0 under FSDP2 (trainer.strategy ModelParallelStrategy, "
        "trainer=fsdp8 / fsdp_cpu: every forward there is a collective and the diagnostics run "
        f"rank-locally); got {every!r}"
    )


def _fsdp(strategy) -> bool:
    """Whether a trainer.strategy is FSDP2's (ModelParallelStrategy, or an FSDP strategy)."""
    target = str(strategy.get("_target_", "")) if hasattr(strategy, "get") else str(strategy)
    return "ModelParallel" in target or "fsdp" in target.lower()


# key (named in the message), the other keys it reads, test(value, *others), message(value, *others)
CROSS = [
    (
        "data.max_terms",
        ("data.min_terms",),
        lambda hi, lo: hi >= lo,
        lambda hi, lo: must("data.max_terms", f"an integer >= data.min_terms ({lo})", hi),
    ),
    (
        "data.num_train_problems",
        ("data.batch_size",),
        lambda size, batch: size >= batch,
        lambda size, batch: must("data.num_train_problems", f"an integer >= data.batch_size ({batch})", size),
    ),
    (
        "algo.mini_batch_size",
        ("data.batch_size", "rollout.n"),
        lambda mini, batch, n: mini <= batch * n,
        _mini_batch,
    ),
    (
        "algo.diagnostics_every_n_steps",
        ("trainer.strategy",),
        lambda every, strategy: not every or not _fsdp(strategy),
        lambda every, strategy: sharded_diagnostics(every),
    ),
    (
        "objective.lambda_pos",
        ("objective.lambda_neg",),
        lambda pos, neg: pos > 0 or neg > 0,
        lambda pos, neg: must(
            "objective.lambda_pos", "> 0 when objective.lambda_neg is 0 (nothing to learn)", pos
        ),
    ),
    (
        "objective.dynamic_sampling",
        ("objective.drop_all_correct_groups", "objective.drop_all_wrong_groups"),
        lambda on, correct, wrong: not on or correct or wrong,
        lambda on, *_: must(
            "objective.dynamic_sampling",
            "false without a group filter (objective.drop_all_correct_groups or objective.drop_all_wrong_groups)",
            on,
        ),
    ),
    (
        "model.dtype",
        ("trainer.accelerator",),
        lambda dtype, accelerator: not float16_on_cpu(dtype, accelerator),
        lambda dtype, accelerator: must(
            "model.dtype", f"float32 or bfloat16 on a CPU (trainer.accelerator={accelerator})", dtype
        ),
    ),
    (
        "device",
        ("model.dtype",),
        lambda device, dtype: not float16_on_cpu(dtype, device),
        lambda device, dtype: must(
            "device", "a CUDA GPU for model.dtype=float16 (on a CPU: float32 or bfloat16)", device
        ),
    ),
    (
        "reward",
        ("data",),
        lambda reward, data: (
            not (
                str(reward.get("_target_")).endswith("SyntheticReward")
                and str(data.get("_target_")).endswith("MathDataModule")
            )
        ),
        lambda *_: (
            "reward=synthetic scores only the synthetic task's integer answers; with data=math add reward=math"
        ),
    ),
]


def _refused(key: str, value) -> str | None:
    """The message for a value that `key`'s rule refuses (None: accepted or no rule)."""
    if key not in BY_KEY:
        return None
    accepted, ok = BY_KEY[key]
    try:
        good = ok(value)
    except TypeError:  # len() of a number, ...
        good = False
    return None if good else must(key, accepted, value)


def check_values(values: dict) -> None:
    """`values`: full key -> value; every single rule, then every cross rule whose keys it has."""
    for key, value in values.items():
        message = _refused(key, value)
        if message:
            raise ConfigError(message)
    for key, others, ok, message in CROSS:
        if key in values and all(k in values for k in others):
            args = [values[key], *(values[k] for k in others)]
            if not ok(*args):
                raise ConfigError(message(*args))


def check(key: str, value) -> None:
    """Nothing if `key`'s rule accepts `value`, else one ConfigError."""
    check_values({key: value})


def check_group(prefix: str, values: dict) -> None:
    """The rules for `prefix`.<name> of each name in `values` (e.g. a constructor's locals());
    names without a rule are not checked."""
    check_values({f"{prefix}.{name}": value for name, value in values.items()})
