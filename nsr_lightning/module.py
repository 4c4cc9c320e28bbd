"""RLVRModule: the Lightning wiring of the RL update (nsr_lightning/update.py).

Manual optimization: each RL step is one Lightning training step (one `global_step`). Rollouts
arrive in `batch["rollout"]`, filled by `RolloutCallback` just before the step; the update runs
the objective's epochs x mini-batches x micro-batches and returns the step's statistics, which
are logged here once per step (ratios summed over ranks by torchmetrics).
"""

from __future__ import annotations

import math
import random
import warnings

import lightning as L
import numpy as np
import torch

from nsr_lightning.checkpoint import RUN_KEY
from nsr_lightning.config_rules import check_group
from nsr_lightning.fsdp import is_sharded, shard_model
from nsr_lightning.metrics import RatioMetric
from nsr_lightning.models import load_policy, load_reference, load_trained
from nsr_lightning.objectives import Objective
from nsr_lightning.step_stats import RATIO_METRICS, StepStats
from nsr_lightning.streams import Stream, stream_seed
from nsr_lightning.update import Ranks, Update, UpdateSettings

PROGRESS_BAR = ("rollout/correct_ratio", "rollout/entropy")


def _is_reference(key: str) -> bool:
    return key.startswith("ref_model.") or ".ref_model." in key


def _drop_reference(module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict hook: the reference policy's entries out (it is the initial weights)."""
    for key in [k for k in state_dict if _is_reference(k[len(prefix) :])]:
        del state_dict[key]


def _reference_not_missing(module, incompatible) -> None:
    """Load hook: the reference policy's entries are missing from every checkpoint on purpose."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not _is_reference(k)]


class RLVRModule(L.LightningModule):
    def __init__(
        self,
        *,
        model_path: str,
        objective: Objective,
        dtype: str = "float32",
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        fsdp: dict | None = None,
        **update_settings,
    ) -> None:
        """update_settings: the `UpdateSettings` fields (`algo.*` and `seed`)."""
        super().__init__()
        check_group("algo", {"lr": lr, "weight_decay": weight_decay, "betas": list(betas)})
        self.save_hyperparameters(ignore=["objective"])
        self.automatic_optimization = False
        self.objective = objective
        settings = UpdateSettings(**update_settings)
        self.model = load_policy(model_path, dtype)
        # a frozen reference policy only when a KL coefficient is above 0 (not saved in checkpoints)
        self.ref_model = load_reference(model_path, dtype) if objective.needs_reference else None
        if self.ref_model is not None:  # eval mode on purpose (no dropout in a KL anchor)
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            # never in a state dict, so in no checkpoint, plain or sharded (FSDP2's loader reads
            # exactly the keys the module's state dict has): it is rebuilt from model_path
            self.register_state_dict_post_hook(_drop_reference)
            self.register_load_state_dict_post_hook(_reference_not_missing)
        # models the objective trains beside the policy, each with its own optimizer
        specs = objective.extra_models()
        self.extras = torch.nn.ModuleDict({n: load_trained(s, model_path, dtype) for n, s in specs.items()})
        if settings.gradient_checkpointing:
            for model in (self.model, *self.extras.values()):
                model.gradient_checkpointing_enable()
        self.update = Update(
            self.model,
            objective,
            settings,
            ref_model=self.ref_model,
            extras=dict(self.extras),
            backward=self.manual_backward,
        )
        self.ratio_names = RATIO_METRICS + tuple(n for n in objective.ratio_metrics if n not in RATIO_METRICS)
        self.step_metrics = RatioMetric(len(self.ratio_names))  # every step ratio, synced over ranks at once

    # Bumped by every optimizer step; the rollout engine re-syncs its weights only when it changed.
    @property
    def policy_version(self) -> int:
        return self.update.policy_version

    @policy_version.setter
    def policy_version(self, value: int) -> None:
        self.update.policy_version = int(value)

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW for the policy, then one per extra model at the objective's learning rate."""
        hp = self.hparams
        specs = self.objective.extra_models()
        groups = [(self.model, hp.lr)] + [(self.extras[n], specs[n].lr) for n in self.extras]
        opts = [
            torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
            for m, lr in groups
        ]
        return opts[0] if len(opts) == 1 else opts

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["policy_version"] = self.policy_version
        checkpoint["bad_updates_in_a_row"] = self.update.bad_updates_in_a_row
        checkpoint[RUN_KEY] = self.run_identity()

    def run_identity(self) -> dict:
        """What a checkpoint of this run was saved with (checkpoint.check_resumable compares it)."""
        config = self.model.config
        shape = {k: getattr(config, k, None) for k in ("model_type", "num_hidden_layers", "hidden_size")}
        return {"objective": self.objective.name, "model": shape | {"vocab_size": config.vocab_size}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.policy_version = int(checkpoint.get("policy_version", 0))
        self.update.bad_updates_in_a_row = int(checkpoint.get("bad_updates_in_a_row", 0))

    # ---- one RL step ----------------------------------------------------------------------------
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Every global random stream (torch, Python, NumPy) restarts from (seed, rank, step) at
        each step, so a run resumed at step s draws what an uninterrupted run draws there (the
        rollout engines and mini-batch orders seed their own streams the same way)."""
        seed = stream_seed(self.update.settings.seed, Stream.GLOBAL, self.global_rank, self.global_step)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opts = self.optimizers()
        opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
        stats = self.update.run(
            batch["rollout"].to(self.device), opts, step=self.global_step, ranks=self._ranks()
        )
        self._log_stats(stats)

    def _ranks(self) -> Ranks:
        world = self.trainer.world_size

        def reduce(value: torch.Tensor, op: str) -> torch.Tensor:
            t = value.detach().to(self.device, copy=True)
            return self.trainer.strategy.reduce(t, reduce_op=op).to(value.device)

        return Ranks(world, self.global_rank, reduce, sharded=is_sharded(self.model) and world > 1)

    def _log_stats(self, stats: StepStats) -> None:
        """Every ratio through the step's torchmetric (summed over ranks; skipped when empty
        everywhere), every scalar as this rank's value or reduced as the update asked; all of
        them read from the device in one transfer (their reductions over ranks first, one
        collective per kind)."""
        device = self.device
        pairs = [stats.ratios.get(name, (0.0, 0.0)) for name in self.ratio_names]
        nums, dens = (
            torch.stack([torch.as_tensor(p[i], dtype=torch.float64, device=device) for p in pairs])
            for i in (0, 1)
        )
        self.step_metrics.update(nums, dens)  # on every rank, so compute() syncs everywhere
        ratios = self.step_metrics.compute()
        self.step_metrics.reset()
        names, values = list(self.ratio_names), [ratios.double()]
        for op in (None, "mean", "max", "sum"):
            picked = [(n, v) for n, (v, reduce) in stats.scalars.items() if reduce == op]
            if not picked:
                continue
            stacked = torch.stack(
                [torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for _, v in picked]
            )
            if op is not None and self.trainer.world_size > 1:
                stacked = self.trainer.strategy.reduce(stacked, reduce_op=op)
            names += [n for n, _ in picked]
            values.append(stacked)
        host = torch.cat(values).float().tolist()  # the step's one read from the device
        for i, (name, value) in enumerate(zip(names, host, strict=True)):
            if i < len(self.ratio_names) and math.isnan(value):
                continue  # a ratio with nothing counted on any rank
            self.log(name, value, on_step=True, prog_bar=name in PROGRESS_BAR)

    # ---- FSDP2 ----------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under ModelParallelStrategy (`trainer=fsdp8`): FSDP2 `fully_shard` per decoder layer and
        on the root of the policy, the reference and every extra model, with the `fsdp.*`
        mixed-precision policy and activation checkpointing (`algo.gradient_checkpointing`, the
        policy only). Lightning calls this before `configure_optimizers`, so the optimizers see
        the sharded parameters. Other strategies: nothing to do."""
        mesh = self.device_mesh
        if mesh is None:
            return
        mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
        options = dict(self.hparams.fsdp or {})
        checkpointing = self.update.settings.gradient_checkpointing
        shard_model(self.model, mesh, activation_checkpointing=checkpointing, **options)
        for model in [self.ref_model, *self.extras.values()]:
            if model is not None:
                shard_model(model, mesh, activation_checkpointing=False, **options)
