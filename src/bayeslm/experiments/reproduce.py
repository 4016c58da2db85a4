"""`bayeslm reproduce`: the claims of "RL with KL penalties is better viewed as Bayesian inference" (Korbak,
Perez & Buckley 2022), shown on exact numbers.

On a toy prior whose continuations are enumerable, every method trains from the same initial model with the
same samples budget, and after each step its exact KL(π_θ‖π*), KL(π*‖π_θ), entropy, reward and KL to the prior
are computed by enumeration. The run checks:

1. pure RL collapses: entropy < 5% of the prior's, mass on the reward's argmax;
2. KL-RL converges to the posterior π* ∝ π0·exp(r/β): KL(π_θ‖π*) < 0.02 nats;
3. DPG converges in the forward direction: KL(π*‖π_θ) < 0.05 nats;
4. J_KLRL(θ) = E[r] − β·KL(π_θ‖π0) equals β·(log Z − KL(π_θ‖π*)) at every step, to 1e-5;
5. on a bimodal target, with a model family that cannot represent both modes at once (a per-token tilt of a
   near-independent prior: only the final layer norm's bias trains), reverse KL (KL-RL) seeks one mode while
   forward KL (DPG) covers both;
6. trajectory balance (Hu et al. 2024) fits the posterior and its log Z together: KL(π_θ‖π*) < 0.02 nats and the
   learned log Z within 0.02 nats of the exact one, on-policy and from prior samples alone (off-policy).
"""

from __future__ import annotations

from pathlib import Path

import torch

from bayeslm.distributions.toy import ToyConfig, toy_lm
from bayeslm.measurement.exact import Exact
from bayeslm.modelling.potentials import Exponential
from bayeslm.modelling.rewards import Reward
from bayeslm.modelling.target import Target
from bayeslm.training.loop import Trainer

BETA = 0.5
MODES = ("good good", "bad bad")
FIGURES = ("kl_model_target", "kl_target_model", "entropy", "reward_mean", "kl_model_prior")


def goodness(texts, prompts):
    """+1 per "good", −1 per "bad": its argmax is the all-"good" continuation."""
    return [t.split().count("good") - t.split().count("bad") for t in texts]


def bimodal(texts, prompts):
    return [1.0 if t in MODES else 0.0 for t in texts]


METHODS = {  # objective settings; every method gets the same steps, batch and learning rate
    "rl": {"objective": "rl"},
    "klrl": {"objective": "klrl"},
    "dpg": {"objective": {"dpg": {"proposal": "adaptive"}}},
    "fdpg-js": {"objective": {"fdpg": {"proposal": "model", "divergence": "js"}}},
    "tb": {"objective": {"tb": {"proposal": "model"}}},
    "tb-prior": {"objective": {"tb": {"proposal": "prior"}}},  # off-policy: it never samples itself
}


def _target(train_steps: int, reward, beta: float, max_new_tokens: int) -> Target:
    prior = toy_lm(ToyConfig(seed=0, train_steps=train_steps))
    return (prior * Exponential(Reward(reward, reward.__name__), beta=beta)).given([""], max_new_tokens)


def _exact_figures(exact: Exact, model) -> dict:
    values = exact.scorecard(model)
    figures = {k: values[k] for k in FIGURES}
    # The identity of claim 4, in exact arithmetic on this model.
    j_klrl = values["reward_mean"] - BETA * values["kl_model_prior"]
    figures["identity_error"] = abs(j_klrl - BETA * (values["log_z"] - values["kl_model_target"]))
    return figures


def _train(method: str, target: Target, exact: Exact, steps: int, lr: float, schedule: str, device: str,
           trainable=None):
    """Trains one method from the target's prior; returns its exact curve, the final model and the objective."""
    settings = {"steps": steps, "prompts_per_step": 1, "samples_per_prompt": 32, "lr": lr, "max_grad_norm": None,
                "eval_n": 0, "schedule": schedule, "device": device, **METHODS[method]}
    trainer = Trainer(target, quiet=True, trainable=trainable, **settings)
    curve = [{"step": 0, **_exact_figures(exact, trainer.model)}]
    for _ in range(steps):
        record = trainer.step()
        curve.append({"step": record["step"], **_exact_figures(exact, trainer.model)})
    return curve, trainer.model, trainer.objective


def _mode_mass(exact: Exact, model) -> list[float]:
    probs = exact.log_probs(model)[0].exp().tolist()
    return [sum(p for p, t in zip(probs, exact.texts) if t == mode) for mode in MODES]


def reproduce(steps: int = 300, bimodal_steps: int = 150, figure: Path | None = None, device: str = "auto") -> dict:
    """Runs every method and the bimodal experiment; returns the JSON report (see the module docstring)."""
    methods = {}
    for method in METHODS:
        target = _target(200, goodness, BETA, max_new_tokens=2)  # a fresh prior each time: the same start for all
        exact = Exact(target)
        curve, model, objective = _train(method, target, exact, steps, lr=3e-3, schedule="linear", device=device)
        argmax = int(torch.argmax(exact.stats["goodness"][0]))
        methods[method] = {**{k: curve[-1][k] for k in FIGURES}, "prior_entropy": curve[0]["entropy"],
                           "argmax_mass": exact.log_probs(model)[0, argmax].exp().item(),
                           "curve": curve}
        if (learned := getattr(objective, "learned_log_z", None)) is not None:  # tb fits log Z beside the model
            methods[method]["log_z_error"] = abs(learned[0].item() - exact.log_z[0].item())
    modes = {}
    for method in ("klrl", "dpg"):
        target = _target(0, bimodal, 0.2, max_new_tokens=2)
        exact = Exact(target)
        _, model, _ = _train(method, target, exact, bimodal_steps, lr=0.3, schedule="constant", device=device,
                             trainable=lambda name: name == "transformer.ln_f.bias")
        modes[method] = _mode_mass(exact, model)
    modes["target"] = [sum(p for p, t in zip(exact.log_posterior[0].exp().tolist(), exact.texts) if t == m)
                       for m in MODES]
    identity = max(point["identity_error"] for m in methods.values() for point in m["curve"])
    report = {"methods": methods, "identity_error": identity, "bimodal": {"modes": list(MODES), "mass": modes}}
    report["claims"] = _claims(report)
    if figure is not None:
        _plot(report, figure)
    return report


def _claims(report: dict) -> dict:
    """Each claim of the module docstring, checked on the exact figures."""
    m, mass = report["methods"], report["bimodal"]["mass"]
    return {
        "rl_collapses": m["rl"]["entropy"] < 0.05 * m["rl"]["prior_entropy"] and m["rl"]["argmax_mass"] > 0.9,
        "klrl_converges_to_posterior": m["klrl"]["kl_model_target"] < 0.02,
        "dpg_converges_forward": m["dpg"]["kl_target_model"] < 0.05,
        "elbo_identity_holds": report["identity_error"] < 1e-5,
        "reverse_kl_seeks_one_mode": max(mass["klrl"]) > 0.6 and min(mass["klrl"]) < 0.05,
        "forward_kl_covers_both": min(mass["dpg"]) > 0.15,
        "tb_fits_posterior_and_log_z": all(m[k]["kl_model_target"] < 0.02 and m[k]["log_z_error"] < 0.02
                                           for k in ("tb", "tb-prior")),
    }


def _plot(report: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("kl_model_target", "KL(π_θ‖π*) (nats)"), ("kl_target_model", "KL(π*‖π_θ) (nats)"),
              ("entropy", "entropy H(π_θ) (nats)"), ("reward_mean", "reward E[r]")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (key, title) in zip(axes, panels):
        for name, method in report["methods"].items():
            ax.plot([p["step"] for p in method["curve"]], [p[key] for p in method["curve"]], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if key.startswith("kl"):
            ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
