"""GPU defaults that a CPU can check: TF32 matrix products on CUDA (a config key), and Lightning's
worker-count advice silenced at its one message (fit's loader holds prompt ids in memory)."""

import warnings

import pytest
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from omegaconf import OmegaConf

from nsr_lightning.cli_build import set_matmul_precision
from nsr_lightning.config_rules import check_values
from nsr_lightning.errors import ConfigError
from nsr_lightning.quiet import silence_known_noise


@pytest.mark.parametrize("cuda", [True, False])
def test_matmul_precision_is_set_on_cuda_only(monkeypatch, cuda):
    before = torch.get_float32_matmul_precision()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    try:
        torch.set_float32_matmul_precision("highest")
        set_matmul_precision(OmegaConf.create({"float32_matmul_precision": "high"}))
        assert torch.get_float32_matmul_precision() == ("high" if cuda else "highest")
    finally:
        torch.set_float32_matmul_precision(before)


def test_matmul_precision_refuses_an_unknown_value():
    with pytest.raises(ConfigError, match="float32_matmul_precision"):
        check_values(OmegaConf.create({"float32_matmul_precision": "tf32"}))


def test_the_dataloader_worker_advice_is_silenced_and_nothing_else():
    silence_known_noise()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        silence_known_noise()
        warnings.warn(
            "The 'train_dataloader' does not have many workers which may be a bottleneck.",
            PossibleUserWarning,
            stacklevel=1,
        )
        warnings.warn("The 'val_dataloader' does not have many workers", PossibleUserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["The 'val_dataloader' does not have many workers"]
