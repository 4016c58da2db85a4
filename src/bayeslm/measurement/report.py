"""`bayeslm report RUN_DIR`: one self-contained HTML page for a training run, readable offline from disk.

It shows what the run was asked for (the target as written, the resolved config), how close the prior and the
trained model are to the target (the scorecard before and after, with standard errors), how training went (the
curves of metrics.jsonl), the β plan when the run directory holds one (`plan.json`, as `bayeslm plan --json`
writes it), texts of the prior, the model and the target, and a warning when the run shows distribution collapse.
Plots are matplotlib PNGs embedded as data URIs; the page has no script and loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from bayeslm.config import ConfigError
from bayeslm.measurement.compare import card_change, summary
from bayeslm.measurement.scorecard import FIGURES
from bayeslm.outputs import refuse_to_replace

COLLAPSE_RATIO = 0.5  # entropy or distinct-2 falling below this fraction of where it started is collapse
SHOWN_PROMPTS = 5  # prompts shown as the prior sees them
SMOOTH_FROM = 20  # steps from which the curves get a trailing mean drawn over the raw per-batch values

CURVES = [  # (title, [(metrics key, legend)])
    ("reward", [("reward_mean", "E_π[r]")]),
    ("KL to the prior, nats", [("kl_model_prior", "KL(π‖π0)")]),
    ("KL to the target, nats", [("kl_model_target", "KL(π‖π*)"), ("kl_target_model", "KL(π*‖π)")]),
    ("ELBO and log Z", [("elbo", "ELBO"), ("log_z", "log Z")]),
    ("entropy, nats", [("entropy", "H(π)")]),
    ("diversity", [("distinct_2", "distinct-2")]),
]

# The per-step figures that weigh by P/q: unreliable at the steps whose metrics say so (Pareto k̂).
TARGET_WEIGHTED = ("log_z", "kl_model_target", "kl_target_model")


@dataclass
class RunFiles:
    """What a run directory holds; any part but the config may be missing (an interrupted or untrained run)."""

    path: Path
    config: dict
    target_text: str | None
    metrics: list[dict]
    card: dict | None
    prior_card: dict | None
    samples: list[dict]
    plan: dict | None
    prompts: list[dict] | None = None  # each prompt as the prior sees it (prompts.json)


def load_run(path: Path) -> RunFiles:
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} is not a run directory (no config.yaml): give the --out directory of "
                          "`bayeslm train`")

    def text(name):
        return (path / name).read_text(encoding="utf-8") if (path / name).is_file() else None

    def lines(name):
        return [json.loads(line) for line in (text(name) or "").splitlines() if line.strip()]

    def document(name):
        return json.loads(text(name)) if text(name) is not None else None

    try:
        config = yaml.safe_load(text("config.yaml"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path / 'config.yaml'} is not valid YAML ({error}); the run directory is damaged") from None
    if not isinstance(config, dict):
        held = "nothing" if config is None else f"a {type(config).__name__}"
        raise ConfigError(f"{path / 'config.yaml'} holds {held}, not a run's config: the run directory is damaged, "
                          "or not one `bayeslm train` wrote")
    return RunFiles(path, config, text("target.yaml"), lines("metrics.jsonl"),
               document("scorecard.json"), document("scorecard_prior.json"), lines("samples.jsonl"),
               document("plan.json"), document("prompts.json"))


def collapse_warnings(run: RunFiles) -> list[str]:
    """Entropy or distinct-2 falling below COLLAPSE_RATIO of where it started: over training (first step against
    the last), and the final model against the prior (the scorecards)."""
    warnings = []
    for key, name in (("entropy", "entropy"), ("distinct_2", "distinct-2")):
        values = [m[key] for m in run.metrics if m.get(key) is not None]
        if len(values) >= 2 and values[0] > 0 and values[-1] < COLLAPSE_RATIO * values[0]:
            warnings.append(f"During training the {name} of the samples fell from {values[0]:.3f} to "
                            f"{values[-1]:.3f} ({values[-1] / values[0]:.0%} of where it started).")
        if run.card and run.prior_card:
            before, after = _value(run.prior_card, key), _value(run.card, key)
            if before and after is not None and before > 0 and after < COLLAPSE_RATIO * before:
                warnings.append(f"The trained model's {name} is {after:.3f} against the prior's {before:.3f} "
                                f"({after / before:.0%}).")
    return warnings


def _value(card: dict, key: str) -> float | None:
    figure = card.get(key)
    return figure["value"] if isinstance(figure, dict) else figure


def render(run: RunFiles) -> str:
    config = run.config
    objective = config.get("objective")
    title = f"bayeslm run {run.path.name}: {next(iter(objective)) if isinstance(objective, dict) else objective}"
    steps = run.metrics[-1]["step"] if run.metrics else 0
    status = ("finished" if run.card is not None else "no final scorecard yet (interrupted, or still running)")
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class=sub>{_e(str(run.path.resolve()))} · {steps} of {config.get('steps')} steps · {status}</p>"]
    left = next((m["step"] for m in run.metrics if m.get("leaving_target")), None)
    if left is not None:
        parts.append(f"<div class=warning id=leaving><strong>The run left π* behind.</strong> From step {left} the "
                     "ELBO of its batches fell significantly below where it started: the model was moving away "
                     "from the target (KL(q‖π*) growing). Lower the learning rate, or train with more samples a "
                     "step.</div>")
    warnings = collapse_warnings(run)
    if warnings:
        parts.append("<div class=warning id=collapse><strong>Distribution collapse.</strong> "
                     + " ".join(_e(w) for w in warnings)
                     + " The model is putting its mass on few texts: lower the learning rate, raise β (a larger "
                     "KL penalty), or train a forward-KL objective (dpg, fdpg).</div>")
    parts += [_target_section(run), _scorecard_section(run), _pass_at_k_section(run), _curves_section(run),
              _plan_section(run),
              _samples_section(run), _config_section(run)]
    return PAGE.format(title=_e(title), body="\n".join(p for p in parts if p))


def write_report(run_dir: Path, out: Path | None = None) -> tuple[Path, list[str]]:
    """Writes the report (default RUN_DIR/report.html); returns its path and the collapse warnings it shows."""
    run = load_run(run_dir)
    out = out or run_dir / "report.html"
    refuse_to_replace(out, owned=run_dir / "report.html")
    out.write_text(render(run), encoding="utf-8")
    return out, collapse_warnings(run)


# ----- sections ------------------------------------------------------------------------------------------------

def _target_section(run: RunFiles) -> str:
    if run.target_text is None:
        target = run.config.get("target")
        text = target if isinstance(target, str) else yaml.safe_dump(target, sort_keys=False, allow_unicode=True)
    else:
        text = run.target_text
    seen = ""
    if run.prompts:
        rows = "".join(f"<tr><td>{_e(repr(p['prompt']))}</td><td><pre>{_e(p['as_seen'])}</pre></td></tr>"
                       for p in run.prompts[:SHOWN_PROMPTS])
        more = (f"<p class=sub>and {len(run.prompts) - SHOWN_PROMPTS} more</p>"
                if len(run.prompts) > SHOWN_PROMPTS else "")
        seen = ("<h3>Prompts as the prior sees them</h3><p>With the chat template and its system message, if "
                f"any: what every figure below is conditioned on.</p><table id=prompts>{rows}</table>{more}")
    return ("<h2>Target</h2><p>The distribution the run approximates: π*(x|c) = π0(x|c)·φ(x,c)/Z(c).</p>"
            f"<pre>{_e(text)}</pre>{seen}")


def _scorecard_section(run: RunFiles) -> str:
    cards = [(name, card) for name, card in (("prior π0", run.prior_card), ("trained model", run.card)) if card]
    if not cards:
        return "<h2>Scorecard</h2><p>No scorecard: the run did not finish, or eval_n was 0.</p>"
    both = len(cards) == 2
    header = "".join(f"<th>{_e(name)}</th>" for name, _ in cards) + ("<th>change</th>" if both else "")
    rows = []
    for key, label in FIGURES:
        cells = "".join(f"<td>{_estimate(card.get(key))}</td>" for _, card in cards)
        if both:
            cells += f"<td>{_change(*card_change(key, run.prior_card, run.card))}</td>"
        rows.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
    for key, label in (("ess", "effective samples"), ("distinct_2", "distinct-2"), ("self_bleu", "self-BLEU")):
        cells = "".join(f"<td>{_number(card.get(key))}</td>" for _, card in cards) + ("<td></td>" if both else "")
        rows.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
    verdict = (f"<p class=verdict id=verdict><strong>{_e(summary(run.prior_card, run.card))}</strong></p>"
               if both else "")
    n = cards[-1][1].get("n")
    reasons = sorted({figure["unreliable"] for _, card in cards for key, _ in FIGURES
                      if isinstance(figure := card.get(key), dict) and figure.get("unreliable")})
    note = "".join(f"<p class=unreliable>! unreliable: {_e(reason)}</p>" for reason in reasons)
    reference = cards[-1][1].get("reference")
    source = reference and ("exact" if reference["exact"] else f"{reference['n']} samples of the prior a prompt")
    against = f"against one reference of the target ({source}: log Z and π*'s samples) " if reference else ""
    return ("<h2>Scorecard</h2><p>Each model q against the target, estimated from "
            f"{n} fresh samples of q {against}(± one standard error). KL(q‖π*) = log Z − ELBO is what "
            "KL-regularised RL minimises; KL(π*‖q) = EUBO − log Z what DPG minimises. A missing value is infinite "
            "(q puts mass where π* has none). The change column judges each move towards the target against two "
            "standard errors of the difference (for KL(q‖π*) against one reference, of the ELBOs', since log Z "
            f"cancels).</p>{verdict}"
            f"<table id=scorecard><tr><th></th>{header}</tr>{''.join(rows)}</table>{note}")


def _pass_at_k_section(run: RunFiles) -> str:
    cards = [(name, card) for name, card in (("prior π0", run.prior_card), ("trained model", run.card))
             if card and card.get("pass_at_k")]
    if not cards:
        return ""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, card in cards:
        ks = [int(k) for k in card["pass_at_k"]]
        values = [card["pass_at_k"][str(k)] for k in ks]
        ax.errorbar(ks, [v["value"] for v in values], marker="o", capsize=3, label=name,
                    yerr=[v["stderr"] if v["stderr"] is not None and v["stderr"] < 1 else 0 for v in values])
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (samples a prompt)", ylabel="pass@k", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    rows = "".join(f"<tr><th>{_e(name)}</th><td>{_estimate(card['pass_at_k']['1'])}</td>"
                   f"<td>{_estimate(card['pass_at_k'][list(card['pass_at_k'])[-1]])}</td>"
                   f"<td>{_number(card.get('distinct_correct'))}</td></tr>" for name, card in cards)
    last = list(cards[-1][1]["pass_at_k"])[-1]
    return (f"<h2>pass@k</h2><p>Samples judged by {_e(cards[-1][1]['verifier'])}: pass@k is the chance that at "
            "least one of k samples a prompt is correct (Chen et al.'s unbiased estimator, ± a jackknife standard "
            "error). Training that sharpens the model raises pass@1; one that only narrows it lowers pass@k at "
            "large k and the number of distinct correct answers.</p><table id=pass-at-k><tr><th></th>"
            f"<th>pass@1</th><th>pass@{last}</th><th>distinct correct a prompt</th></tr>{rows}</table>"
            f"<img alt='pass@k curve' src='{_png(fig)}'>")


def _curves_section(run: RunFiles) -> str:
    if not run.metrics:
        return "<h2>Training curves</h2><p>No step has been logged yet.</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    steps = [m["step"] for m in run.metrics]
    flagged = [bool(m.get("unreliable")) for m in run.metrics]
    for ax, (title, series) in zip(axes.flat, CURVES):
        for key, legend in series:
            values = [m.get(key) if m.get(key) is not None else math.nan for m in run.metrics]
            line, = ax.plot(steps, values, label=legend, marker="." if len(steps) < 30 else None,
                            alpha=0.35 if len(steps) >= SMOOTH_FROM else 1.0)
            if len(steps) >= SMOOTH_FROM:  # one batch is noisy: a trailing mean shows the trend
                ax.plot(steps, _trailing_mean(values, len(steps) // 10), color=line.get_color())
            if key in TARGET_WEIGHTED and any(flagged):
                ax.plot([x for x, f in zip(steps, flagged) if f], [v for v, f in zip(values, flagged) if f],
                        "x", color="grey", label="unreliable (k̂)" if key == series[-1][0] else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    note = ""
    if any(flagged):
        swaps = [m.get("proposal_swap") for m in run.metrics]
        kept = (f" The adaptive proposal was not replaced at {swaps.count('unreliable')} of them." if
                "unreliable" in swaps else "")
        note = (f"<p class=unreliable id=unreliable-steps>! At {sum(flagged)} of {len(steps)} steps (grey crosses) "
                "the batch's importance weights P/q had a Pareto k̂ past its threshold, so that step's log Z, "
                f"KL(π‖π*) and KL(π*‖π) are unreliable.{kept} Draw more samples per step (samples_per_prompt, "
                "grad_accum) for figures that can be trusted.</p>")
    return ("<h2>Training curves</h2><p>Per-step estimates from each training batch (self-normalised where the "
            "samples come from a proposal other than the model); the bold line is a trailing mean.</p>"
            f"<img alt='training curves' src='{_png(fig)}'>{note}")


def _trailing_mean(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1):i + 1] if not math.isnan(v)]
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out


def _plan_section(run: RunFiles) -> str:
    if run.plan is None:
        return ""
    import matplotlib.pyplot as plt

    betas = run.plan["betas"]
    chosen = [run.plan[k] for k in ("kl_budget", "reward_target", "chosen") if k in run.plan]
    rows = "".join(f"<tr><td>{_number(p['beta'])}</td><td>{_estimate(p['target_reward_mean'])}</td>"
                   f"<td>{_estimate(p['kl_target_prior'])}</td><td>{_estimate(p['log_z'])}</td>"
                   f"<td>{_number(p['ess'])}</td><td>{_e(_goal(p))}</td></tr>"
                   for p in sorted(betas + chosen, key=lambda p: p["beta"]))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    kl_axis = ax.twinx()  # reward and KL have their own units and scales
    x = [p["beta"] for p in betas]
    lines = ax.plot(x, [p["target_reward_mean"]["value"] for p in betas], marker="o", color="C0",
                    label="E_π*[r], the target's reward (left)")
    lines += kl_axis.plot(x, [p["kl_target_prior"]["value"] for p in betas], marker="s", color="C1",
                          label="KL(π*‖π0), nats (right)")
    for p in chosen:
        lines.append(ax.axvline(p["beta"], color="grey", linestyle="--",
                                label=", ".join(filter(None, [f"β = {p['beta']:.3g}", _goal(p)]))))
    ax.set_xscale("log")
    ax.set_xlabel("β (the evidence is exp(r/β): smaller β, sharper target)")
    ax.set_ylabel("E_π*[r]", color="C0")
    kl_axis.set_ylabel("KL(π*‖π0), nats", color="C1")
    ax.grid(alpha=0.3)
    ax.legend(handles=lines, fontsize=8, loc="best")
    fig.tight_layout()
    return ("<h2>β plan</h2><p>What KL-regularised RL converges to for each β, predicted before training from "
            f"{_e(str(run.plan.get('n')))} prior samples per prompt (reward {_e(str(run.plan.get('reward')))}).</p>"
            "<table><tr><th>β</th><th>E_π*[r]</th><th>KL(π*‖π0)</th><th>log Z</th><th>ESS</th><th></th></tr>"
            f"{rows}</table><img alt='beta plan' src='{_png(fig)}'>")


def _goal(prediction: dict) -> str:
    return f"solved for: {prediction['goal']}" if "goal" in prediction else ""


def _samples_section(run: RunFiles) -> str:
    if not run.samples:
        return ""
    labels = {"prior": "prior π0", "model": "trained model", "target": "target π* (importance-resampled)"}
    prompts = list(dict.fromkeys(s["prompt"] for s in run.samples))
    out = ["<h2>Samples</h2><p>Texts of the prior and of the trained model as drawn for the scorecard; texts of "
           "the target resampled from those draws in proportion to their importance weights (few distinct texts "
           "there means a small effective sample size).</p>"]
    for prompt in prompts:
        out.append(f"<h3>Prompt: {_e(repr(prompt))}</h3><div class=columns>")
        for source, label in labels.items():
            rows = [s for s in run.samples if s["prompt"] == prompt and s["source"] == source]
            if not rows:
                continue
            note = (f" <span class=sub>(from the {rows[0]['resampled_from']}'s samples, ESS "
                    f"{rows[0]['ess']:.1f})</span>" if source == "target" else "")
            items = "".join(f"<li>{_e(s['text']) or '<em>(empty)</em>'} <span class=reward>r = {s['reward']:.3f}"
                            "</span></li>" for s in rows)
            out.append(f"<div><h4>{_e(label)}{note}</h4><ol class=samples>{items}</ol></div>")
        out.append("</div>")
    return "\n".join(out)


def _config_section(run: RunFiles) -> str:
    text = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
    return f"<h2>Resolved config</h2><pre>{_e(text)}</pre>"


# ----- formatting ----------------------------------------------------------------------------------------------

def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _number(x) -> str:
    if x is None:
        return "∞ / n.a."
    return f"{x:.4g}" if isinstance(x, float) else _e(str(x))


def _estimate(figure) -> str:
    if not isinstance(figure, dict):
        return "–"
    if figure.get("value") is None:
        return "∞"
    stderr = "∞" if figure.get("stderr") is None else f"{figure['stderr']:.4f}"  # JSON writes inf as null
    shown = f"{figure['value']:.4f} <span class=se>± {stderr}</span>"
    if figure.get("unreliable"):  # greyed, the reason on hover and in the note under the table
        return f"<span class=unreliable title=\"{_e(figure['unreliable'])}\">{shown} !</span>"
    return shown


def _change(delta: float | None, verdict: str) -> str:
    if delta is None:
        return ""
    style = {"better": "better", "WORSE": "worse"}.get(verdict)
    shown = f"{delta:+.4f}" + (f" {_e(verdict)}" if verdict else "")
    return f"<span class={style}>{shown}</span>" if style else shown


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0; }} .sub {{ color: #666; font-size: 0.9em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: right; }}
th:first-child {{ text-align: left; }} .se {{ color: #888; font-size: 0.85em; }}
.unreliable {{ color: #aaa; }} .better {{ color: #1e7e34; }} .worse {{ color: #d93025; font-weight: bold; }}
.verdict {{ font-size: 1.05em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
img {{ max-width: 100%; }}
.warning {{ background: #fdecea; border-left: 5px solid #d93025; padding: 0.8em 1em; margin: 1em 0; }}
.columns {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 1em; }}
.samples li {{ margin-bottom: 0.3em; }} .reward {{ color: #888; font-size: 0.8em; }}
</style></head>
<body>
{body}
</body></html>
"""
