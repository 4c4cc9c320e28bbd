"""Instantiation of what `fit` and `evaluate` need, from the composed config (nsr_lightning/cli.py)."""

from __future__ import annotations


def build_fit(cfg):
    """Instantiate everything `fit` needs; user errors surface here, before any training."""
    import lightning as L
    import transformers
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf import OmegaConf

    from nsr_lightning.callbacks import RolloutCallback, RunEndCallback
    from nsr_lightning.checkpoint import AtomicCheckpointIO, periodic_checkpoints
    from nsr_lightning.errors import UserError
    from nsr_lightning.models import load_model_config, load_tokenizer
    from nsr_lightning.module import RLVRModule
    from nsr_lightning.preflight import check_prompt_lengths

    transformers.logging.disable_progress_bar()  # one "Loading weights" bar per rank is noise
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    set_matmul_precision(cfg)
    tokenizer = load_tokenizer(cfg.model.path)
    objective = instantiate(cfg.objective)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    budget = ("rollout.sampling.max_new_tokens", cfg.rollout.sampling.max_new_tokens)
    check_prompt_lengths(datamodule.prompt_rows(), load_model_config(cfg.model.path), budget)
    engine = instantiate(cfg.rollout.engine, tokenizer=tokenizer)
    reward = instantiate(cfg.reward)
    rollout = RolloutCallback(
        engine,
        reward,
        n=cfg.rollout.n,
        sampling=OmegaConf.to_container(cfg.rollout.sampling, resolve=True),
        seed=cfg.seed,
    )
    callbacks = [RunEndCallback(), rollout] + [instantiate(c) for c in cfg.callbacks.values()]
    loggers = [instantiate(c) for c in cfg.logger.values()]
    algo = OmegaConf.to_container(cfg.algo, resolve=True)
    if cfg.rollout.get("correction") is not None:  # the engine's rollout correction (update.py)
        algo["rollout_correction"] = OmegaConf.to_container(cfg.rollout.correction, resolve=True)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    # A strategy given as an object (trainer=fsdp8: ModelParallelStrategy) rather than a name
    plugins = []
    if trainer_args.get("enable_checkpointing", True):
        callbacks.append(periodic_checkpoints(cfg.checkpoint.every_n_steps, cfg.checkpoint.keep))
        if not isinstance(trainer_args.get("strategy"), dict):  # FSDP2 writes its own shards
            plugins.append(AtomicCheckpointIO())
    if isinstance(trainer_args.get("strategy"), dict):
        trainer_args["strategy"] = instantiate(trainer_args["strategy"])
    try:
        trainer = L.Trainer(
            **trainer_args,
            logger=loggers or False,
            callbacks=callbacks,
            plugins=plugins or None,
            default_root_dir=cfg.run_dir,
        )
    except MisconfigurationException as e:  # Lightning's refusal of a trainer.* value, one line
        raise UserError(f"trainer: {str(e).splitlines()[0]}") from None
    module = RLVRModule(  # last: it loads the weights
        model_path=cfg.model.path,
        dtype=cfg.model.dtype,
        objective=objective,
        seed=cfg.seed,
        fsdp=OmegaConf.to_container(cfg.fsdp, resolve=True) if "fsdp" in cfg else None,
        **algo,
    )
    return trainer, module, datamodule


def build_evaluate(cfg):
    """Instantiate everything `evaluate` needs; returns a function that runs it."""
    import lightning as L
    import torch
    import transformers
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from nsr_lightning.data import build_prompt, load_problems
    from nsr_lightning.data.datamodule import encode
    from nsr_lightning.evaluation import evaluate
    from nsr_lightning.models import load_any_policy, load_tokenizer
    from nsr_lightning.preflight import check_prompt_lengths
    from nsr_lightning.rollout import SamplingConfig

    transformers.logging.disable_progress_bar()
    L.seed_everything(cfg.seed, verbose=False)
    set_matmul_precision(cfg)
    data = cfg.data
    paths, fields = OmegaConf.to_container(data.paths), OmegaConf.to_container(data.fields)
    problems = {}
    for name in data.datasets:
        limit = data.limit or (data.get("synthetic_problems") if name == "synthetic" else None)
        problems[name] = load_problems(
            name, path=paths.get(name), fields=fields.get(name), limit=limit, seed=data.synthetic_seed
        )
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling, resolve=True))
    model, tokenizer_source = load_any_policy(cfg.model.path, cfg.model.dtype, cfg.model.get("base_model"))
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    tokenizer = load_tokenizer(tokenizer_source)
    build_prompt(tokenizer, "1+1", data.template)  # a bad template fails here
    rows = {name: [encode(p, tokenizer, data.template) for p in ps] for name, ps in problems.items()}
    check_prompt_lengths(rows, model.config, ("sampling.max_new_tokens", cfg.sampling.max_new_tokens))
    engine = instantiate(cfg.rollout.engine, tokenizer=tokenizer)
    reward = instantiate(cfg.reward)
    chunk_size = cfg.chunk_size or max(1, getattr(engine, "batch_size", 8 * cfg.n) // cfg.n)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    settings = {
        "model": str(cfg.model.path),
        "n": cfg.n,
        "sampling": OmegaConf.to_container(cfg.sampling, resolve=True),
        "seed": cfg.seed,
        "template": data.template,
        "chunk_size": chunk_size,
        "reward": OmegaConf.to_container(cfg.reward).get("_target_"),
    }
    args = dict(engine=engine, model=model, reward=reward, n=cfg.n, sampling=sampling, seed=cfg.seed)
    args |= dict(out_dir=cfg.run_dir, chunk_size=chunk_size, settings=settings, loggers=loggers)
    return lambda: evaluate(rows, **args)


def set_matmul_precision(cfg) -> None:
    """`float32_matmul_precision` on a machine with CUDA (a CPU's float32 products are unchanged)."""
    import torch

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
