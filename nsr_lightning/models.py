"""Loading the policy and tokenizer: the embedded tiny model, a local path, or a hub id."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from nsr_lightning.config_rules import DTYPE_NAMES, check
from nsr_lightning.errors import UserError

ASSETS = Path(__file__).parent / "assets"
TINY_MODEL = ASSETS / "tiny_model"
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def _check_source(path: str) -> tuple[str, bool]:
    """(path, local_files_only). A path that looks local must exist; a hub id loads from the hub
    only when the machine is online (HF_HUB_OFFLINE unset)."""
    p = Path(os.path.expanduser(str(path)))
    looks_local = (
        p.is_absolute() or str(path).startswith((".", "~")) or p.exists() or str(path).count("/") != 1
    )
    if looks_local:
        if not p.is_dir():
            raise UserError(
                f"model.path: no model directory at {p} (set model.path to a local model or a hub id)"
            )
        if not (p / "config.json").is_file():
            raise UserError(f"model.path: {p} has no config.json; it is not a Hugging Face model directory")
        return str(p), True
    return str(path), os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")


def load_model_config(path: str):
    """The model's transformers config (config.json) alone: its context, before any weights load."""
    src, local_only = _check_source(path)
    try:
        return AutoConfig.from_pretrained(src, local_files_only=local_only)
    except (OSError, ValueError) as e:
        raise UserError(
            f"model.path: cannot read a model config from {src!r}: {str(e).splitlines()[0]}"
        ) from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_tokenizer(path: str):
    src, local_only = _check_source(path)
    if Path(src).is_dir() and not any((Path(src) / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"model.path: {src} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); copy them "
            "from the model it was made from (tokenizer.save_pretrained(path))"
        )
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
    except (OSError, ValueError) as e:
        raise UserError(
            f"model.path: cannot load a tokenizer from {src!r}: {str(e).splitlines()[0]}"
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(path: str, dtype: str = "float32") -> PreTrainedModel:
    """The causal LM in train mode (from_pretrained returns eval mode; Lightning keeps it)."""
    check("model.dtype", dtype)
    src, local_only = _check_source(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=DTYPES[dtype], local_files_only=local_only)
    except OSError as e:
        raise UserError(f"model.path: cannot load a model from {src!r}: {str(e).splitlines()[0]}") from None
    return model.train()


def load_reference(path: str, dtype: str = "float32") -> PreTrainedModel:
    """A frozen copy of the initial policy: the anchor of a KL penalty (GRPO, PPO)."""
    model = load_policy(path, dtype).eval()
    model.requires_grad_(False)
    return model


def load_critic(path: str, dtype: str = "float32") -> PreTrainedModel:
    """A value model: the policy's architecture with a freshly initialised scalar head per token
    (AutoModelForTokenClassification, num_labels=1, no dropout), in train mode."""
    check("model.dtype", dtype)
    src, local_only = _check_source(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: score.weight" is expected, not news
    try:
        config = AutoConfig.from_pretrained(src, local_files_only=local_only)
        config.num_labels, config.classifier_dropout = 1, 0.0
        model = AutoModelForTokenClassification.from_pretrained(
            src, config=config, dtype=DTYPES[dtype], local_files_only=local_only
        )
    except (OSError, ValueError) as e:
        raise UserError(
            f"objective.critic_model_path: cannot load a value model from {src!r}: {str(e).splitlines()[0]}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.train()


def load_trained(spec, policy_path: str, dtype: str = "float32") -> PreTrainedModel:
    """An objective's extra trained model (`objectives.TrainedModel`): kind "value" is a critic."""
    if spec.kind != "value":
        raise ValueError(f"unknown kind of trained model {spec.kind!r} (known: value)")
    return load_critic(spec.path or policy_path, dtype)


def load_any_policy(path: str, dtype: str = "float32", base_model: str | None = None):
    """(model, tokenizer source) from a model directory, a hub id or a Lightning checkpoint.

    A ``.ckpt`` is read with ``weights_only=True`` (no code runs from the file); its ``model.*``
    weights go into the base model it was trained from (the run's ``model_path``
    hyper-parameter, or ``base_model`` when given).
    """
    if not str(path).endswith(".ckpt"):
        return load_policy(path, dtype), path
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise UserError(f"model.path: no checkpoint file at {p}")
    from nsr_lightning.checkpoint import damage

    if (why := damage(p)) is not None:
        raise UserError(f"model.path: {p} is not a whole checkpoint: {why}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"model.path: cannot read {p} as a Lightning checkpoint: {str(e).splitlines()[0]}"
        ) from None
    base = base_model or (ckpt.get("hyper_parameters") or {}).get("model_path")
    if not base:
        raise UserError(f"model.path: {p} does not say its base model; set model.base_model=<path or hub id>")
    state = {k[len("model.") :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("model.")}
    if not state:
        raise UserError(f"model.path: {p} holds no model.* weights; is it an nsr_lightning checkpoint?")
    model = load_policy(base, dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"model.path: {p} does not fit base model {base} "
            f"(missing {len(missing)} tensors, e.g. {missing[:1]}; unexpected {len(unexpected)}, e.g. {unexpected[:1]})"
        )
    return model, base
