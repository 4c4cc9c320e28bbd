"""Table 1 in one path (docs/table1.md): each model carries the paper's evaluation settings and
`evaluate` / fit's pass@k under experiment=paper_* use them; a max_new_tokens that does not fit the
model's context is refused in one line; the page's commands compose; the overlay script plots
exactly the runs' numbers. Configs are composed only: nothing loads or downloads."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nsr_lightning.cli import load_config, main
from nsr_lightning.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "table1.md"
SCRIPT = ROOT / "scripts" / "pass_at_k_overlay.py"
sys.path.insert(0, str(SCRIPT.parent))
import pass_at_k_overlay as overlay  # noqa: E402

RUN_DIR = "run_dir=/tmp/unused"
# model -> n, temperature, top_p, top_k, max_new_tokens, context, template (the paper's, section 3)
PAPER = {
    "qwen2_5_math_7b": (256, 0.6, 0.95, 0, 3072, 4096, "qwen25_math"),
    "qwen3_4b": (64, 0.7, 0.8, 20, 31744, 32768, "qwen3_nonthinking"),
}


def settings(cfg, node: str) -> tuple:
    s = cfg.sampling if node == "sampling" else cfg.callbacks.pass_at_k
    n = cfg.n if node == "sampling" else s.n
    return n, s.temperature, s.top_p, s.top_k, s.max_new_tokens


@pytest.mark.parametrize("model", PAPER)
def test_evaluate_uses_the_models_paper_settings(model):
    cfg = load_config("evaluate", [f"model={model}", RUN_DIR])
    n, t, p, k, tokens, context, template = PAPER[model]
    assert settings(cfg, "sampling") == (n, t, p, k, tokens)
    assert cfg.data.template == template and cfg.model.max_model_len == context and tokens < context


@pytest.mark.parametrize("model", PAPER)
def test_the_paper_experiments_pass_at_k_follows_the_model(model):
    cfg = load_config("fit", ["experiment=paper_nsr", f"model={model}", RUN_DIR])
    n, t, p, k, tokens, context, template = PAPER[model]
    assert settings(cfg, "pass_at_k") == (n, t, p, k, tokens)
    assert cfg.rollout.sampling.max_new_tokens == tokens and cfg.rollout.engine.max_model_len == context
    assert cfg.data.template == template and cfg.rollout.sampling.temperature == 1.0  # trains at T = 1


def test_presets_are_their_models():
    for preset, model in [("qwen25_math", "qwen2_5_math_7b"), ("qwen3_nonthinking", "qwen3_4b")]:
        a = load_config("evaluate", [f"preset={preset}", "model.path=/x", RUN_DIR])
        b = load_config("evaluate", [f"model={model}", "model.path=/x", RUN_DIR])
        assert settings(a, "sampling") == settings(b, "sampling") and a.data.template == b.data.template
    default = load_config("evaluate", [RUN_DIR])  # the tiny model: what preset=tiny gave before
    assert settings(default, "sampling") == (16, 1.0, 1.0, 0, 80) and default.data.template == "chat"


@pytest.mark.parametrize(
    "command, overrides, key, limit",
    [
        ("evaluate", ["model=qwen2_5_math_7b", "sampling.max_new_tokens=4096"], "sampling.max_new_tokens", 4096),
        ("evaluate", ["preset=qwen25_math", "sampling.max_new_tokens=5000"], "sampling.max_new_tokens", 4096),
        ("fit", ["experiment=paper_nsr", "callbacks.pass_at_k.max_new_tokens=4096"], "callbacks.pass_at_k", 4096),
        ("fit", ["experiment=paper_nsr", "model=qwen3_4b", "rollout.sampling.max_new_tokens=32768"],
         "rollout.sampling.max_new_tokens", 32768),
        ("fit", ["experiment=paper_nsr", "rollout.engine.max_model_len=2048"], "rollout.sampling", 2048),
    ],
)  # fmt: skip
def test_a_budget_that_does_not_fit_the_context_is_refused(command, overrides, key, limit):
    with pytest.raises(UserError) as info:
        load_config(command, [*overrides, RUN_DIR])
    message = str(info.value)
    assert key in message and f"({limit})" in message and "prompt needs room" in message
    assert "\n" not in message


def test_the_refusal_is_one_line_from_the_command_line(capsys):
    assert main(["evaluate", "model=qwen2_5_math_7b", "sampling.max_new_tokens=4096", RUN_DIR]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: sampling.max_new_tokens (4096) does not fit model.max_model_len (4096): the prompt needs "
        "room too; set sampling.max_new_tokens below 4096 (e.g. 3072)"
    )
    assert err in PAGE.read_text(encoding="utf-8")  # the page shows it as it is


def commands() -> list[list[str]]:
    text = PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    return [shlex.split(b.replace("\\\n", " ")) for b in blocks]


def test_the_pages_nsr_commands_compose_with_the_paper_settings(tmp_path):
    fit, evaluate, _ = commands()
    assert fit[:4] == ["python", "-m", "nsr_lightning", "fit"] and evaluate[3] == "evaluate"
    cfg = load_config("fit", [*fit[4:], f"run_dir={tmp_path}"])
    assert cfg.objective.name == "nsr" and settings(cfg, "pass_at_k") == PAPER["qwen2_5_math_7b"][:5]
    for model in PAPER:
        cfg = load_config("evaluate", [*evaluate[4:], f"model={model}", f"run_dir={tmp_path}"])
        assert list(cfg.data.datasets) == ["math500", "aime25", "amc23"]
        assert settings(cfg, "sampling") == PAPER[model][:5]
    n, t, p, k, tokens, context, template = PAPER["qwen2_5_math_7b"]  # the page's table says the same
    assert (
        f"| `qwen2_5_math_7b` | {n} | {t} | {p} | {k} | {tokens} | {context} | `{template}` |"
        in PAGE.read_text()
    )


def fake_runs(tmp: Path) -> tuple[Path, Path, dict]:
    """An evaluate run (summary.json) and a fit run (csv/version_1/pass_at_k.json, before / after)."""
    evaluate = tmp / "eval_nsr"
    evaluate.mkdir()
    summary = {"settings": {}, "datasets": {
        "math500": {"pass@k": {"1": 0.5, "2": 0.625, "4": 0.75}},
        "aime25": {"pass@k": {"1": 0.1, "2": 0.2, "4": 0.3}},
    }}  # fmt: skip
    (evaluate / "summary.json").write_text(json.dumps(summary))
    fit = tmp / "fit_psr"
    (fit / "csv" / "version_1").mkdir(parents=True)
    (fit / "csv" / "version_0").mkdir(parents=True)  # an older version: not the one read
    (fit / "csv" / "version_0" / "pass_at_k.json").write_text("[]")
    history = [
        {"tag": "before", "step": 0, "dataset": "math500", "pass@k": {"1": 0.25, "2": 0.4, "4": 0.5}},
        {"tag": "after", "step": 9, "dataset": "math500", "pass@k": {"1": 0.6, "2": 0.7, "4": 0.72}},
    ]
    (fit / "csv" / "version_1" / "pass_at_k.json").write_text(json.dumps(history))
    want = {
        "math500": {
            "NSR": {1: 0.5, 2: 0.625, 4: 0.75},
            "Base": {1: 0.25, 2: 0.4, 4: 0.5},
            "fit_psr": {1: 0.6, 2: 0.7, 4: 0.72},
        },
        "aime25": {"NSR": {1: 0.1, 2: 0.2, 4: 0.3}},
    }
    return evaluate, fit, want


def test_the_overlay_plots_exactly_the_runs_numbers(tmp_path):
    evaluate, fit, want = fake_runs(tmp_path)
    curves = overlay.collect([f"{evaluate}=NSR", f"{fit}@before=Base", str(fit)])
    fig = overlay.plot(curves, tmp_path / "direct.png")
    assert overlay.plotted(fig) == want  # the lines drawn, read back from the figure
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    out = tmp_path / "figure.png"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), f"{evaluate}=NSR", f"{fit}@before=Base", str(fit), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    written = json.loads(out.with_suffix(".json").read_text())
    assert {
        d: {r: {int(k): v for k, v in t.items()} for r, t in runs.items()} for d, runs in written.items()
    } == want


def test_the_overlay_names_a_missing_tag_and_a_folder_without_results(tmp_path):
    evaluate, fit, _ = fake_runs(tmp_path)
    with pytest.raises(SystemExit, match="no pass@k tagged 'step 5'; it has: after, before"):
        overlay.read_run(fit, "step 5")
    with pytest.raises(SystemExit, match="no summary.json"):
        overlay.read_run(tmp_path)
    assert list(overlay.collect([str(evaluate)], ["aime25"])) == ["aime25"]


def test_interpolated_algo_and_sampling_keys_reach_the_constructors_resolved(tmp_path, capsys):
    """experiment=paper_* sets algo.gradient_checkpointing and rollout.sampling.max_new_tokens from
    the model (`${model....}`): the built module and engine get the values, not the strings."""
    run = [
        "fit", "trainer.max_steps=1", "trainer.enable_checkpointing=false", "callbacks=none", "logger=none",
        "data.batch_size=2", "rollout.n=2", "model.max_new_tokens=24", "+model.gradient_checkpointing=false",
        "algo.gradient_checkpointing=${model.gradient_checkpointing}",
        "rollout.sampling.max_new_tokens=${model.max_new_tokens}", f"run_dir={tmp_path}",
    ]  # fmt: skip
    assert main(run) == 0, capsys.readouterr().err[-2000:]
    assert (tmp_path / "final_model").is_dir()
