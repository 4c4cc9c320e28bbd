"""Checks that run before anything expensive (models, data, processes): every folder the run
writes to (writable, room to write), the accelerator asked for, and, for W&B online, an API key
and a reachable server; once prompts and model are loaded, before any training or evaluation:
every prompt fits the model's context (`check_prompt_lengths`).
Each failure is one UserError naming the key to fix.
Config values are checked by nsr_lightning/config_rules.py."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from nsr_lightning.errors import UserError

MB = 1 << 20
LOG_MARGIN_MB = 64  # metrics, configs, pass@k files
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


def check_writable(key: str, folder: str | os.PathLike) -> None:
    """Create `folder` if needed and write, fsync and delete a probe file in it."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"{key}: cannot write to {path}: {e.strerror or e}; choose another folder") from None


def weights_bytes(model_path: str) -> int:
    """Size of the weight files of a local model folder (0 for a hub id: unknown here)."""
    path = Path(os.path.expanduser(str(model_path)))
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for pattern in WEIGHT_FILES for f in path.glob(pattern))


def needed_bytes(cfg) -> int:
    """About what a fit run writes: the final model, plus `checkpoint.keep` checkpoints of the
    weights and AdamW's two moments, for the policy and each model the objective trains beside
    it (about as large: a critic), plus the logs."""
    from hydra.utils import instantiate

    weights = weights_bytes(cfg.model.path)
    trained = 1 + len(instantiate(cfg.objective).extra_models())
    per_checkpoint = 3 * weights * trained
    keep = cfg.checkpoint.keep if cfg.trainer.get("enable_checkpointing", True) else 0
    return weights + keep * per_checkpoint + LOG_MARGIN_MB * MB


def check_run_folders(cfg, command: str) -> None:
    """run_dir and every logger's save_dir: writable; run_dir: enough free space (fit)."""
    check_writable("run_dir", cfg.run_dir)
    for name, logger in (cfg.get("logger") or {}).items():
        save_dir = logger.get("save_dir") if hasattr(logger, "get") else None
        if save_dir:
            check_writable(f"logger.{name}.save_dir", save_dir)
    if command != "fit":
        return
    need, free = needed_bytes(cfg), shutil.disk_usage(cfg.run_dir).free
    if free < need:
        raise UserError(
            f"run_dir: {cfg.run_dir} has {free // MB} MB free, this run writes about {need // MB} MB "
            f"(final model + checkpoint.keep={cfg.checkpoint.keep} checkpoints with optimizer state + logs); "
            "free some space, choose another run_dir, or lower checkpoint.keep"
        )


def check_accelerator(cfg) -> None:
    """trainer.accelerator=gpu / cuda, or trainer.devices, on a machine without that many CUDA GPUs:
    one line (Lightning fails deep in Trainer() with a long traceback)."""
    import torch

    trainer = cfg.get("trainer") or {}
    accelerator, devices = str(trainer.get("accelerator", "auto")), trainer.get("devices", "auto")
    if accelerator not in ("gpu", "cuda"):
        return
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    want = devices if isinstance(devices, int) and devices > 0 else 1
    if have < want:
        raise UserError(
            f"trainer.accelerator={accelerator}: this machine has {have} CUDA GPU(s), the run asks for {want} "
            "(trainer.devices); on a CPU use trainer=cpu (or trainer.accelerator=cpu)"
        )


def check_prompt_lengths(rows: dict[str, list[dict]], model_config, max_new_tokens: tuple[str, int]) -> None:
    """Every prompt must fit the model's context (max_position_embeddings): a longer one is one
    UserError naming the longest prompt, the context and max_new_tokens (never a silently
    scored 0). A prompt that fits but leaves fewer than max_new_tokens positions is warned once:
    the HF engine generates past the context (positions the model never saw), vLLM stops there."""
    context = getattr(model_config, "max_position_embeddings", None) or getattr(
        model_config, "n_positions", None
    )
    if not context or not any(rows.values()):
        return
    length, name, problem = max(
        (len(r["prompt_ids"]), name, r["id"]) for name, rs in rows.items() for r in rs
    )
    key, budget = max_new_tokens
    if length >= context:
        room = (
            f"drop or shorten the problems longer than {context - budget} tokens (data.limit / a filtered data file)"
            if budget < context
            else f"lower {key} and drop or shorten the long problems (data.limit / a filtered data file)"
        )
        raise UserError(
            f"data: the longest prompt ({name} problem {problem!r}: {length} tokens) does not fit the model's "
            f"context (max_position_embeddings={context}), with {key}={budget} tokens to generate after it; "
            f"{room}; or use a model with a longer context"
        )
    if length + budget > context and os.environ.get("LOCAL_RANK", "0") == "0":
        print(
            f"warning: the longest prompt ({name} problem {problem!r}: {length} tokens) + {key}={budget} "
            f"passes the model's context ({context}): a longer response runs past it; lower {key} to "
            f"{context - length} to stay within it",
            file=sys.stderr,
            flush=True,
        )


def check_online_logger(cfg, timeout: float = 5.0) -> None:
    """`logger.wandb.offline=false`: an API key and a reachable W&B server, checked in seconds
    (else wandb.init fails deep in Lightning after a long wait)."""
    import netrc
    import socket
    from urllib.parse import urlparse

    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is None or wandb.get("offline", True) or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    offline = "or set logger.wandb.offline=true (upload later: wandb sync <run_dir>/wandb/offline-run-*)"
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            key = (netrc.netrc().authenticators(host) or (None, None, None))[2]
        except (OSError, netrc.NetrcParseError):
            key = None
    if not key:
        raise UserError(
            f"logger.wandb.offline=false: no W&B API key (set WANDB_API_KEY or run `wandb login`), {offline}"
        )
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise UserError(
            f"logger.wandb.offline=false: cannot reach the W&B server {host}:{port} ({e.strerror or e}); "
            f"check the network, {offline}"
        ) from None
