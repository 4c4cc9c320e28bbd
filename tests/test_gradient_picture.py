"""scripts/gradient_picture.py: the paper's token-level gradients (section 4.2, appendix B) on the
tiny model. Exact where theory is exact (logit space), first order where it is first order (one
SGD step on the weights)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gradient_picture as gp  # noqa: E402


@pytest.mark.parametrize("reward", [1.0, -1.0])
def test_closed_forms_equal_autograd(reward):
    torch.manual_seed(0)
    z = torch.randn(17, dtype=torch.float64) * 3
    g_auto, h_auto = gp.autograd_grads(z, 5, reward)
    g = gp.closed_form_grad(z, 5, reward)
    torch.testing.assert_close(g, g_auto, rtol=0, atol=1e-15)
    torch.testing.assert_close(gp.entropy_grad(z), h_auto, rtol=0, atol=1e-15)
    pi = torch.softmax(z, -1)
    assert g.sum().abs() < 1e-15  # a shift of all logits changes nothing
    others = torch.arange(17) != 5
    # NSR (R = -1) lowers the sampled token and raises every other one in proportion to pi_v
    assert torch.sign(-g[5]) == reward
    torch.testing.assert_close(
        -g[others] / pi[others], torch.full((16,), -reward * float(pi[5]), dtype=torch.float64)
    )


def test_sgd_step_on_the_weights_matches_first_order_theory():
    result = gp.analyse(lr=1e-5)
    for name, c in result["cases"].items():
        assert c["logit_grad_autograd_max_err"] < 1e-12 and c["entropy_grad_autograd_max_err"] < 1e-12
        # measured logit change after one SGD step = the closed form pushed through the network, to O(lr)
        assert c["first_order_rel_err"] < 5e-3, name
        # the sampled token goes the way the reward says: up for PSR, down for NSR
        assert (c["sampled_logit_move"] > 0) == (c["reward"] > 0), name
        # same direction as the logit-space update, in probabilities (where it matters) and in logits
        assert c["corr_dpi_measured_vs_logit_update"] > 0.9, name
        assert c["corr_measured_vs_logit_update"] > 0.3, name


def test_default_output_is_a_new_folder_not_the_committed_figure(tmp_path, monkeypatch):
    """Without --out, the script writes under runs/ and leaves docs/miniature/ (committed) alone."""
    fake = {"problem": "1+2", "answer": 3, "lr": 1e-3, "cases": {}}
    monkeypatch.setattr(gp, "analyse", lambda lr, seed: fake)
    plot_module = type(sys)("gradient_picture_plot")
    plot_module.plot = lambda result, path: Path(path).write_bytes(b"png")
    monkeypatch.setitem(sys.modules, "gradient_picture_plot", plot_module)
    monkeypatch.chdir(tmp_path)
    assert gp.main([]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == [
        "runs/gradient_picture/gradient_picture.json",
        "runs/gradient_picture/gradient_picture.png",
    ]
    assert gp.main(["--out", "docs/miniature"]) == 0  # the committed files: only when asked
    assert (tmp_path / "docs/miniature/gradient_picture.json").is_file()
