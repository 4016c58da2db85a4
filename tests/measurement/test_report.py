"""`bayeslm report`: a self-contained HTML page per run, checked in real headless Chromium."""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import PROMPTS

from bayeslm.cli import main
from bayeslm.config import load
from bayeslm.measurement.report import collapse_warnings, load_run, write_report
from bayeslm.outputs import RunExists
from bayeslm.training.config import TrainConfig
from bayeslm.training.run import train

TOY_TARGET = {"prior": {"toy": {"seed": 0, "train_steps": 50}}, "prompts": PROMPTS, "max_new_tokens": 3,
              "potentials": [{"exponential": {"reward": {"keyword": ["good"]}, "beta": 0.5}}]}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished toy KL-RL run."""
    run = tmp_path_factory.mktemp("report") / "run"
    config = load(TrainConfig, {"target": TOY_TARGET, "steps": 4, "samples_per_prompt": 4, "lr": 3e-3,
                                "eval_n": 16, "checkpoint_every": 4})
    train(config, run, quiet=True)
    (run.parent / "target.yaml").write_text(json.dumps(TOY_TARGET))  # for `bayeslm plan`
    return run


def test_a_finished_run_holds_what_the_report_needs(run_dir):
    run = load_run(run_dir)
    assert run.card["n"] == run.prior_card["n"] == 2 * 16
    assert run.prior_card["kl_model_prior"]["value"] == 0  # the prior against itself
    assert "keyword" in run.target_text and len(run.metrics) == 4
    sources = {s["source"] for s in run.samples}
    assert sources == {"prior", "model", "target"}
    resampled = [s for s in run.samples if s["source"] == "target"]
    assert len(resampled) == 8 * len(PROMPTS) and all(s["ess"] >= 1 for s in resampled)


def test_report_shows_every_section_and_embeds_everything(run_dir, tmp_path, capsys):
    (run_dir / "plan.json").write_text(_plan(run_dir, capsys))
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(out) and printed["collapse_warnings"] == []
    page = out.read_text()
    for heading in ("Target", "Scorecard", "Training curves", "β plan", "Samples", "Resolved config"):
        assert f"<h2>{heading}</h2>" in page
    assert "class=warning" not in page
    # Self-contained: every image is a data URI, and nothing names a remote resource.
    images = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)


def _plan(run_dir, capsys) -> str:
    assert main(["plan", "--target", str(run_dir.parent / "target.yaml"), "-n", "64", "--betas", "0.5,1,2",
                 "--kl-budget", "0.05", "--json"]) == 0
    return capsys.readouterr().out


def test_collapse_is_flagged_when_entropy_or_diversity_falls(run_dir):
    run = load_run(run_dir)
    assert collapse_warnings(run) == []
    run.metrics = [{"step": 1, "entropy": 2.0, "distinct_2": 0.9}, {"step": 2, "entropy": 0.1, "distinct_2": 0.8}]
    warnings = collapse_warnings(run)
    assert len(warnings) == 1 and "entropy" in warnings[0] and "2.000 to 0.100" in warnings[0]
    run.card = {**run.card, "distinct_2": run.prior_card["distinct_2"] * 0.2}
    assert any("distinct-2" in w and "prior" in w for w in collapse_warnings(run))


def test_report_of_a_directory_that_is_not_a_run_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_report_of_an_interrupted_run_says_so(run_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(run_dir / name, partial / name)
    out, _ = write_report(partial)
    page = out.read_text()
    assert "no final scorecard yet" in page and "<h2>Training curves</h2>" in page


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver "
                                                             "(`make test` installs them)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path, capsys):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    (run_dir / "plan.json").write_text(_plan(run_dir, capsys))
    out, _ = write_report(run_dir, tmp_path / "report.html")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(out.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
        assert len(images) == 2 and all(complete and width > 0 for _, complete, width in images), images
        assert driver.execute_script("return document.querySelectorAll('#scorecard tr').length") > 10
        # Nothing was fetched: embedded images are not resource loads.
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()


@pytest.mark.parametrize("kl_budget", [0.05, 1.0])
def test_demo_plans_trains_evaluates_and_reports(tmp_path, kl_budget):
    from bayeslm.experiments.demo import Budget, run_demo, table

    budget = Budget(plan_n=64, kl_budget=kl_budget, steps=3, samples_per_prompt=4, max_new_tokens=3, eval_n=16)
    out = tmp_path / "demo"
    summary = run_demo(out, quiet=True, prior={"toy": {"seed": 0, "train_steps": 50}}, prompts=PROMPTS,
                       budget=budget)
    plan = json.loads((out / "plan.json").read_text())
    assert abs(plan["kl_budget"]["kl_target_prior"]["value"] - kl_budget) < 1e-6  # β solved for the KL budget
    if kl_budget < 0.1:  # a gentle tilt: the pool vouches for it, and it is trained as planned
        assert summary["beta"] == plan["kl_budget"]["beta"] and "chosen" not in plan
    else:  # too strong for 64 samples to see: β is raised until they can
        assert summary["beta"] == plan["chosen"]["beta"] > plan["kl_budget"]["beta"]
    assert f"beta: {round(summary['beta'], 4)}" in (out / "target.yaml").read_text()
    assert Path(summary["report"]).is_file() and "<h2>β plan</h2>" in Path(summary["report"]).read_text()
    figures = summary["figures"]
    assert figures["kl_model_prior"]["prior"]["value"] == 0 and figures["kl_model_prior"]["model"]["value"] > 0
    # π* beside them, from the reference: its ELBO is log Z, and it is 0 nats from itself
    assert figures["elbo"]["target"]["value"] == summary["reference"]["log_z"]["value"]
    assert figures["kl_model_target"]["target"]["value"] == 0
    shown = table(summary)
    assert "KL(q‖π*)" in shown and "target π*" in shown and "±" in shown
    assert any(v in shown for v in ("better", "WORSE", "within noise")) and summary["verdict"] in shown
    with pytest.raises(RunExists, match="already holds a run"):  # a second demo never replaces the first silently
        run_demo(out, quiet=True, prior={"toy": {"seed": 0, "train_steps": 50}}, prompts=PROMPTS, budget=budget)


def test_kl_to_the_target_of_two_models_against_one_reference_is_judged_by_their_elbos():
    """log Z_ref is common to both KLs and cancels in their difference: a reference too noisy to tell either KL
    well still lets the ELBOs tell which model is closer."""
    from bayeslm.measurement.compare import card_change, change

    def card(elbo, log_z=(5.0, 6.0)):
        reference = {"log_z_per_prompt": list(log_z)}
        return {"elbo": {"value": elbo, "stderr": 0.1}, "reference": reference,
                "kl_model_target": {"value": sum(log_z) / 2 - elbo, "stderr": 1.0}}

    prior, model = card(3.0), card(3.5)
    assert change("kl_model_target", prior["kl_model_target"], model["kl_model_target"])[1] == "within noise"
    assert card_change("kl_model_target", prior, model) == (-0.5, "better")
    other = card(3.5, log_z=(5.0, 6.1))  # another reference: the KLs are judged as they stand
    assert card_change("kl_model_target", prior, other)[1] == "within noise"


def test_the_report_judges_each_change_and_says_whether_training_worked(run_dir, tmp_path):
    from bayeslm.measurement.compare import change, summary

    def figure(value, stderr=0.05, unreliable=None):
        return {"value": value, "stderr": stderr, **({"unreliable": unreliable} if unreliable else {})}

    assert change("kl_target_model", figure(1.0), figure(0.5)) == (-0.5, "better")
    assert change("kl_target_model", figure(1.0), figure(1.5))[1] == "WORSE"
    assert change("kl_model_target", figure(1.0), figure(1.1))[1] == "within noise"  # 0.1 < 2·√2·0.05
    assert change("kl_model_target", figure(1.0), figure(0.2, unreliable="k̂"))[1] == "unreliable"
    assert change("entropy", figure(3.0), figure(1.0))[1] == ""  # no direction towards the target
    assert change("kl_model_target", figure(1.0), {"value": None, "stderr": 0.0}) == (None, "")  # infinite
    assert summary({"kl_target_model": figure(1.0), "kl_model_target": figure(1.0)},
                   {"kl_target_model": figure(1.5), "kl_model_target": figure(0.5)}).startswith(
        "The trained model is closer to the target in KL(q‖π*), what KL-RL minimises, and further in KL(π*‖q)")
    assert summary({"kl_target_model": figure(1.0), "kl_model_target": figure(1.0)},
                   {"kl_target_model": figure(1.5), "kl_model_target": figure(1.5)}).startswith(
        "The trained model is further from the target")

    worse = tmp_path / "worse"
    shutil.copytree(run_dir, worse)
    # 16 samples a prompt are too few to judge the weights' tail (every KL is marked): mark none, and put the
    # prior far closer to the target than the model
    for name, value in (("scorecard_prior.json", 0.1), ("scorecard.json", 1.0)):
        card = json.loads((worse / name).read_text())
        card["kl_target_model"] = card["kl_model_target"] = figure(value, 0.01)
        (worse / name).write_text(json.dumps(card))
    page = write_report(worse)[0].read_text()
    assert "<th>change</th>" in page and "WORSE" in page
    assert re.search(r"id=verdict><strong>The trained model is further from the target", page)


def test_a_run_toward_a_verifier_posterior_reports_pass_at_k_for_the_prior_and_the_model(tmp_path):
    target = {**TOY_TARGET, "potentials": [{"constraint": {"predicate": {"keyword": ["good"]}}}]}
    run = tmp_path / "run"
    train(load(TrainConfig, {"target": target, "objective": "dpg", "steps": 2, "samples_per_prompt": 4,
                             "eval_n": 16}), run, quiet=True)
    cards = load_run(run)
    for card in (cards.card, cards.prior_card):
        assert card["verifier"] == "Constraint(satisfied(keyword:good))"
        assert list(card["pass_at_k"]) == ["1", "2", "4", "8", "16"] and card["distinct_correct"] >= 0
    page = write_report(run)[0].read_text()
    assert "<h2>pass@k</h2>" in page and "alt='pass@k curve' src='data:image/png;base64," in page
    assert page.count("<tr><th>prior π0</th>") == 1 and "<th>pass@16</th>" in page
