"""The figure of scripts/gradient_picture.py: one row per case (PSR on a correct sample, NSR on an
incorrect one), at the position analysed. Tokens shown: the 10 most probable before the update,
plus the sampled one.

(a) next-token probabilities before and after one SGD step on the weights;
(b) the logit change (centred: softmax ignores a common shift): measured after the SGD step,
    its first-order prediction, and the closed-form logit-space update -dL/dz scaled to the
    measured change's norm;
(c) the entropy bonus's gradient dH/dz beside -dL/dz (each scaled to a maximum of 1).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _shown(case: dict, top: int = 10) -> list[int]:
    pi = np.array(case["pi_before"])
    ids = list(np.argsort(-pi)[:top])
    if case["sampled_id"] not in ids:
        ids.append(case["sampled_id"])
    return ids


def _label(tok: str) -> str:
    return {"": "<eos>", " ": "␣", "\n": "\\n"}.get(tok, tok)


def plot(result: dict, path) -> None:
    cases = result["cases"]
    fig, axes = plt.subplots(len(cases), 3, figsize=(16, 4 * len(cases)), dpi=110)
    for row, (name, c) in zip(axes, cases.items(), strict=True):
        ids = _shown(c)
        x = np.arange(len(ids))
        names = [_label(c["tokens"][i]) + ("*" if i == c["sampled_id"] else "") for i in ids]
        before, after = np.array(c["pi_before"])[ids], np.array(c["pi_after"])[ids]
        row[0].bar(x - 0.2, before, 0.4, color="grey", label="before")
        row[0].bar(
            x + 0.2, after, 0.4, color="tab:red" if name == "PSR" else "tab:blue", label="after one SGD step"
        )
        row[0].set_title(
            f"({name}, R={c['reward']:+.0f}) pi(. | {c['context'][-18:]!r}); * = sampled", fontsize=9
        )
        meas, pred = np.array(c["dz_measured"]), np.array(c["dz_predicted"])
        closed = -np.array(c["logit_grad_closed"])
        meas, pred, closed = meas - meas.mean(), pred - pred.mean(), closed - closed.mean()
        closed_scaled = closed * np.linalg.norm(meas) / np.linalg.norm(closed)
        row[1].bar(x, meas[ids], 0.6, color="lightgrey", label="measured (SGD step on weights)")
        row[1].plot(x, pred[ids], "kx", label="first-order prediction")
        row[1].plot(
            x, closed_scaled[ids], "o", mfc="none", color="tab:green", label="closed form -dL/dz (scaled)"
        )
        row[1].axhline(0, color="black", lw=0.6)
        row[1].set_title(
            f"logit change: first-order rel. err {c['first_order_rel_err']:.1e}, "
            f"corr with -dL/dz {c['corr_measured_vs_logit_update']:.2f}",
            fontsize=9,
        )
        ent = np.array(c["entropy_grad"])
        row[2].bar(
            x - 0.2, closed[ids] / np.abs(closed).max(), 0.4, color="tab:green", label=f"{name}: -dL/dz"
        )
        row[2].bar(
            x + 0.2, ent[ids] / np.abs(ent).max(), 0.4, color="tab:purple", label="entropy bonus dH/dz"
        )
        row[2].axhline(0, color="black", lw=0.6)
        row[2].set_title("logit-space directions (each scaled to max |.| = 1)", fontsize=9)
        for ax in row:
            ax.set_xticks(x, names)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"{result['problem']} = {result['answer']}: one PSR and one NSR update (lr {result['lr']:g})"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
