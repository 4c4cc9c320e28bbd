"""The gradient picture (paper, Figure 5; section 4.2 and appendix B) with the embedded tiny model.

On a real held-out prompt of the embedded task, the tiny model samples responses; we take one
correct and one incorrect response and, at one position t of each (the response position where
the policy is least sure: highest entropy), apply the paper's per-token loss (eq. 6 at one step)

    L = -R * pi(y_t | x, y_<t),   R = +1 (PSR, correct sample) or -1 (NSR, incorrect sample).

Three things are compared, all in float64:

1. Exact, logit space. The closed form dL/dz_v = -R pi_v (1 - pi_v) for the sampled token and
   R pi_v pi_y for the others (appendix B) against autograd on the logits. A step taken on the
   logits themselves, z' = z - lr * dL/dz, is exactly this vector.
2. First order, weight space. One plain SGD step on the network's weights, theta' = theta - lr *
   dL/dtheta, changes the position's logits by a measured dz. To first order in lr, dz equals
   -lr * J J^T dL/dz (J = dz/dtheta: the closed-form logit gradient pushed through the network);
   that linear prediction is computed as a directional derivative (central difference, step
   1e-4) and compared with the measured dz (relative error, O(lr)).
3. Direction. The measured dz against the logit-space update -dL/dz: the sampled token's logit
   moves the way R says (up for PSR, down for NSR, relative to the mean logit), and the Pearson
   correlation between the two centred vectors, and between the probability changes they make
   (measured, and the first-order change of a step along -dL/dz), where tokens of near-zero
   probability, whose logits the network moves freely, weigh nothing. They need not be equal: the network couples
   the logits (J J^T is not a multiple of the identity), so this part is first-order theory
   plus the network's own geometry, not an identity.

For contrast, the entropy bonus's gradient at the same position: dH/dz_v = -pi_v (log pi_v -
sum_v' pi_v' log pi_v') (appendix B), checked against autograd too. It pushes every token above
the mean log-probability down and every token below it up, whatever the sample's reward.

    python scripts/gradient_picture.py                         # runs/gradient_picture/: .png + .json
    python scripts/gradient_picture.py --out docs/miniature    # replace the committed figure and JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nsr_lightning.data import build_prompt
from nsr_lightning.data.synthetic import SyntheticTask
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer
from nsr_lightning.rewards.synthetic import SyntheticReward
from nsr_lightning.rollout import HFEngine, SamplingConfig


def closed_form_grad(logits: torch.Tensor, y: int, reward: float) -> torch.Tensor:
    """dL/dz for L = -R * softmax(z)[y] (paper, appendix B). logits: (V,) -> (V,)."""
    pi = torch.softmax(logits, -1)
    grad = reward * pi * pi[y]  # unsampled tokens: R pi_v pi_y
    grad[y] = -reward * pi[y] * (1 - pi[y])  # sampled token: -R pi_y (1 - pi_y)
    return grad


def entropy_grad(logits: torch.Tensor) -> torch.Tensor:
    """dH/dz_v = -pi_v (log pi_v - sum pi log pi) (paper, appendix B). logits: (V,) -> (V,)."""
    logp = torch.log_softmax(logits, -1)
    pi = logp.exp()
    return -pi * (logp - (pi * logp).sum())


def autograd_grads(logits: torch.Tensor, y: int, reward: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dz, dH/dz) by autograd, to check the two closed forms."""
    z = logits.detach().clone().requires_grad_(True)
    (g_loss,) = torch.autograd.grad(-reward * torch.softmax(z, -1)[y], z)
    logp = torch.log_softmax(z, -1)
    (g_ent,) = torch.autograd.grad(-(logp.exp() * logp).sum(), z)
    return g_loss, g_ent


def position_logits(model, ids: torch.Tensor, pos: int) -> torch.Tensor:
    """Logits (V,) predicting token ids[pos] (one sequence, no padding)."""
    return model(input_ids=ids[None, :pos]).logits[0, -1]


def sample_pair(model, tokenizer, *, seed: int, n: int = 32, problems: int = 32):
    """The first held-out problem (of the first `problems`) on which n samples include a correct and
    an incorrect response: (question, prompt ids, correct response ids, incorrect response ids)."""
    engine, reward = HFEngine(tokenizer, batch_size=n), SyntheticReward()
    for i, problem in enumerate(SyntheticTask(seed=0).heldout_problems(problems)):
        prompt = build_prompt(tokenizer, problem.question, "chat")
        batch = engine.generate(
            model, [prompt], n=n, sampling=SamplingConfig(max_new_tokens=80), seed=seed + i
        )
        scores = reward(batch.texts, [problem.answer] * n)
        right = [j for j, s in enumerate(scores) if s > 0]
        wrong = [j for j, s in enumerate(scores) if s == 0 and not batch.truncated[j]]
        if right and wrong:
            pick = [
                batch.response_ids[j][batch.response_mask[j].bool()].tolist() for j in (right[0], wrong[0])
            ]
            return problem, prompt, pick[0], pick[1]
    raise RuntimeError("no held-out problem with both a correct and an incorrect sample")


@torch.no_grad()
def uncertain_position(model, prompt: list[int], response: list[int]) -> int:
    """Index into prompt + response of the response token whose distribution has the most entropy."""
    ids = torch.tensor(prompt + response)
    logp = torch.log_softmax(model(input_ids=ids[None]).logits[0, len(prompt) - 1 : -1], -1)  # (R, V)
    entropy = -(logp.exp() * logp).sum(-1)
    return len(prompt) + int(entropy.argmax())


def sgd_logit_change(model, ids: torch.Tensor, pos: int, reward: float, lr: float) -> dict:
    """Measured and first-order-predicted logit change at `pos` after one SGD step on the weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    y = int(ids[pos])
    z0 = position_logits(model, ids, pos)
    loss = -reward * torch.softmax(z0, -1)[y]
    grads = torch.autograd.grad(loss, params)
    z0 = z0.detach()

    @torch.no_grad()
    def logits_at(scale: float) -> torch.Tensor:
        for p, g in zip(params, grads, strict=True):
            p.sub_(scale * g)
        z = position_logits(model, ids, pos)
        for p, g in zip(params, grads, strict=True):
            p.add_(scale * g)
        return z

    eps = 1e-4  # directional derivative of z along -dL/dtheta, times lr: the linear prediction
    predicted = lr * (logits_at(eps) - logits_at(-eps)) / (2 * eps)
    measured = logits_at(lr) - z0
    return {
        "z_before": z0,
        "measured": measured,
        "predicted": predicted,
        "grad_norm": float(torch.cat([g.flatten() for g in grads]).norm()),
    }


def softmax_jacobian(logits: torch.Tensor) -> torch.Tensor:
    """d softmax(z) / dz = diag(pi) - pi pi^T. (V,) -> (V, V)."""
    pi = torch.softmax(logits, -1)
    return torch.diag(pi) - torch.outer(pi, pi)


def centred(v: torch.Tensor) -> torch.Tensor:
    return v - v.mean()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = centred(a), centred(b)
    return float((a @ b) / (a.norm() * b.norm()))


def analyse(lr: float = 1e-3, seed: int = 0) -> dict:
    """Everything the figure and the test need, for the PSR and the NSR case."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(str(TINY_MODEL))
    model = load_policy(str(TINY_MODEL), "float32").eval()
    problem, prompt, right, wrong = sample_pair(model, tokenizer, seed=seed)
    model = model.double()
    cases = {}
    for name, response, reward in (("PSR", right, 1.0), ("NSR", wrong, -1.0)):
        ids = torch.tensor(prompt + response)
        pos = uncertain_position(model, prompt, response)
        step = sgd_logit_change(model, ids, pos, reward, lr)
        z, y = step["z_before"], int(ids[pos])
        g_closed = closed_form_grad(z, y, reward)
        g_auto, h_auto = autograd_grads(z, y, reward)
        h_closed = entropy_grad(z)
        measured, predicted = step["measured"], step["predicted"]
        cases[name] = {
            "reward": reward,
            "position": pos - len(prompt),
            "context": tokenizer.decode(response[: pos - len(prompt)]),
            "sampled_token": tokenizer.decode([y]),
            "sampled_id": y,
            "tokens": [tokenizer.decode([v]) for v in range(z.numel())],
            "pi_before": torch.softmax(z, -1).tolist(),
            "pi_after": torch.softmax(z + measured, -1).tolist(),
            "logit_grad_closed": g_closed.tolist(),
            "logit_grad_autograd_max_err": float((g_closed - g_auto).abs().max()),
            "entropy_grad": h_closed.tolist(),
            "entropy_grad_autograd_max_err": float((h_closed - h_auto).abs().max()),
            "dz_measured": measured.tolist(),
            "dz_predicted": predicted.tolist(),
            "first_order_rel_err": float((measured - predicted).norm() / predicted.norm()),
            "sampled_logit_move": float(centred(measured)[y]),
            "corr_measured_vs_logit_update": pearson(measured, -g_closed),
            "corr_entropy_vs_logit_update": pearson(h_closed, -g_closed),
            # the same in probability space, where near-zero-probability tokens weigh nothing:
            # measured change of pi against the first-order change of a logit-space step along -dL/dz
            "corr_dpi_measured_vs_logit_update": pearson(
                torch.softmax(z + measured, -1) - torch.softmax(z, -1), softmax_jacobian(z) @ -g_closed
            ),
        }
    return {"problem": problem.question, "answer": problem.answer, "lr": lr, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out",
        default="runs/gradient_picture",
        help="folder for gradient_picture.png and .json (docs/miniature: the committed ones, replaced)",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="plain SGD step size on the weights")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = analyse(lr=args.lr, seed=args.seed)
    from gradient_picture_plot import plot  # scripts/ is on sys.path when run as a script

    plot(result, out / "gradient_picture.png")
    slim = {
        **result,
        "cases": {k: {n: v for n, v in c.items() if n != "tokens"} for k, c in result["cases"].items()},
    }
    (out / "gradient_picture.json").write_text(json.dumps(slim, indent=1))
    for name, c in result["cases"].items():
        print(
            f"{name}: token {c['sampled_token']!r} after {c['context']!r}: closed form vs autograd max err "
            f"{c['logit_grad_autograd_max_err']:.1e}; SGD step vs first-order prediction rel err "
            f"{c['first_order_rel_err']:.1e}; corr(measured dz, -dL/dz) {c['corr_measured_vs_logit_update']:.3f}, "
            f"of d pi {c['corr_dpi_measured_vs_logit_update']:.3f}; "
            f"sampled logit moved {c['sampled_logit_move']:+.2e}"
        )
    print(f"wrote {out / 'gradient_picture.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
