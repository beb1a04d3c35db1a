"""Executable-Rule GRPO: rewards are the rule scores; a few steps run with a tiny random Qwen2."""
import json

import numpy as np
import pytest

from zsg_iad_ros.core.rules import RULE_FAMILIES, run_rules
from zsg_iad_ros.training.grpo import (WRITER_KEYS, aux_tasks, main, make_reward_functions,
                                       report_from_completion, rule_rewards, train)


@pytest.fixture(scope="module")
def tasks():
    return aux_tasks(n_good=1, n_defective=1, seed=0, size=64)


def _answer(task, **change):
    obj = {k: task.reference[k] for k in WRITER_KEYS}
    obj.update(change)
    return json.dumps(obj)


def _expected(completion, task):
    """Family rewards recomputed from the rules directly."""
    text = completion if isinstance(completion, str) else completion[-1]["content"]
    report = report_from_completion(text, task.facts)
    scores = {r.name: r.score for r in run_rules(report, task.evidence)}
    return {f: float(np.mean([scores[n] for n in names])) for f, names in RULE_FAMILIES.items()}


def test_tasks_come_from_the_aux_split_with_valid_references(tasks):
    from zsg_iad_ros.data.splits import AUX_CATEGORIES

    assert {t.facts["sensor_type"] for t in tasks} <= {"thermal", "xray"}
    assert len(tasks) == 2 * len(AUX_CATEGORIES)
    decisions = [t.reference["decision"] for t in tasks]
    assert decisions.count("normal") == len(AUX_CATEGORIES)
    assert any(t.reference["defects"] for t in tasks)
    for t in tasks:
        assert all(r.passed for r in run_rules(t.reference, t.evidence)), t.prompt


def test_rewards_follow_the_rules(tasks):
    task = next(t for t in tasks if t.reference["defects"])
    assert rule_rewards(_answer(task), task) == {"structure": 1.0, "region": 1.0, "coherence": 1.0}
    assert rule_rewards("no json here", task) == {"structure": 0.0, "region": 0.0,
                                                  "coherence": 0.0}
    wrong = rule_rewards(_answer(task, decision="normal"), task)
    assert wrong["structure"] == 1.0 and wrong["coherence"] < 1.0
    no_regions = rule_rewards(_answer(task, defects=[]), task)
    assert no_regions["region"] < 1.0
    bad_key = rule_rewards(_answer(task, extra="x"), task)
    assert bad_key["structure"] < 1.0


def test_grpo_steps_with_tiny_model_use_rule_rewards(tasks, tmp_path):
    from zsg_iad_ros.training.tiny_models import build_tiny_qwen2

    model = build_tiny_qwen2(str(tmp_path / "tiny_qwen2"))
    seen = []
    trainer = train(model, str(tmp_path / "out"), tasks[:4], steps=2, num_generations=2,
                    max_completion_length=8, learning_rate=1e-4,
                    on_reward=lambda fam, c, i, v: seen.append((fam, c, i, v)))
    assert trainer.state.global_step == 2
    # every family's reward function was called on every completion and returned the rule score
    assert {fam for fam, *_ in seen} == set(RULE_FAMILIES)
    assert len(seen) == 3 * 2 * 2
    for fam, completion, i, value in seen:
        assert value == pytest.approx(_expected(completion, tasks[i])[fam])
    logged = {k for row in trainer.state.log_history for k in row}
    for fam in RULE_FAMILIES:
        assert f"rewards/{fam}_reward/mean" in logged, logged


def test_reward_functions_take_trl_conversational_completions(tasks):
    funcs = make_reward_functions(tasks)
    assert [f.__name__ for f in funcs] == [f"{f}_reward" for f in RULE_FAMILIES]
    task = next(t for t in tasks if t.reference["defects"])
    i = tasks.index(task)
    completions = [[{"role": "assistant", "content": _answer(task)}],
                   [{"role": "assistant", "content": "garbage"}]]
    for f in funcs:
        assert f(prompts=[None, None], completions=completions, task_index=[i, i]) == [1.0, 0.0]


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--model", "x", "--out", "y", "--steps", "0"])
    with pytest.raises(SystemExit):
        main(["--model", "x", "--out", "y", "--num-generations", "4", "--batch-size", "6"])


@pytest.mark.parametrize("category,defect,modalities", [
    ("wood", "dent", ["geometry"]), ("bottle", "inclusion", ["sensor"]),
    ("wood", "stain", ["rgb"])])
def test_ground_truth_facts_name_the_modalities_that_show_the_defect(category, defect,
                                                                     modalities):
    from zsg_iad_ros.data.synthetic import generate_sample
    from zsg_iad_ros.training.grpo import make_task

    sample = generate_sample(category, defect, 3, size=128)
    task = make_task(sample)
    assert task.reference["decision"] == "anomalous"
    assert task.reference["defects"], "planted defect not found in the facts"
    for d in task.reference["defects"]:
        assert d["type"] == defect and d["modalities"] == modalities
        x, y, w, h = d["box"]
        assert sample.gt_mask[y:y + h, x:x + w].any()
    assert f'"type": "{defect}"' in task.prompt


def test_cli_trains_and_writes_model_and_rewards(tmp_path, capsys):
    from zsg_iad_ros.training.tiny_models import build_tiny_qwen2

    model = build_tiny_qwen2(str(tmp_path / "tiny_qwen2"))
    out = tmp_path / "run"
    assert main(["--model", model, "--out", str(out), "--steps", "1", "--num-generations", "2",
                 "--max-completion-length", "4", "--n-good", "0", "--n-defective", "1",
                 "--image-size", "64", "--lora"]) == 0
    rewards = json.loads((out / "rewards.json").read_text())
    assert rewards and all(f"rewards/{f}_reward/mean" in rewards[-1] for f in RULE_FAMILIES)
    assert (out / "model" / "adapter_config.json").exists()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 1
