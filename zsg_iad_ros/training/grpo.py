"""Executable-Rule GRPO: fine-tune the report writer with the executable rules as rewards.

    python -m zsg_iad_ros.training.grpo --model PATH_OR_ID --out DIR [--steps N] [--lora]

The writer is a causal LM (or the language side of a VLM) that receives the structured facts of
one part as a text-only prompt and answers with a JSON report (decision, defects, reasoning,
conclusion). TRL's `GRPOTrainer` samples several answers per prompt and scores each with one
reward function per rule family (structure, region consistency, reasoning-conclusion
coherence; see `core/rules.py`): the reward is the family's mean rule score, so it is
verifiable and needs no learned judge.

Prompts come from the synthetic auxiliary split only (`data.splits.iter_split('aux', ...)`).
To keep data preparation cheap the facts are derived from the ground truth, not from detector
runs: the ground-truth mask is the predicted mask, its components are the regions (type = the
planted defect type, supporting modalities = those whose ground-truth mask covers the region),
and the score is drawn above the threshold for defective parts and below it for good ones
(modalities whose ground truth does not show the defect score 0).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from zsg_iad_ros.core.frame import MODALITIES, Detection, Sample
from zsg_iad_ros.core.report import build_report, modality_name, regions_from_mask
from zsg_iad_ros.core.rules import RULE_FAMILIES, Evidence, run_rules

log = logging.getLogger(__name__)

#: Report fields the writer produces; the rest of the report comes from the facts.
WRITER_KEYS = ("decision", "defects", "reasoning", "conclusion")
FACT_KEYS = ("schema_version", "model_id", "score", "threshold", "image_size", "sensor_type",
             "modality_scores", "missing_modalities")

INSTRUCTION = (
    "You write inspection reports for an industrial anomaly detector. Answer with one JSON "
    "object with the keys decision (normal, anomalous or unknown), defects (one object per "
    "region with type, confidence, box [x, y, w, h], area_px, centroid_px, centroid_3d, "
    "location, modalities, severity), reasoning (sentences naming the number, types, "
    "locations and supporting inputs of the defects and the decision) and conclusion (one "
    "sentence with the decision). Use only these facts:")


@dataclass
class WriterTask:
    """One prompt: the facts, the evidence the rules check against, the fixed report fields."""

    prompt: str
    evidence: Evidence
    facts: dict  # FACT_KEYS of the reference report
    reference: dict  # deterministic report built from the same facts (valid)


def detection_from_ground_truth(sample: Sample, threshold: float = 0.5,
                                min_region_area_px: int = 16) -> Detection:
    """A `Detection` whose mask, regions and score come from the sample's ground truth."""
    frame = sample.frame
    h, w = frame.shape
    mask = (np.asarray(sample.gt_mask, bool) if sample.gt_mask is not None
            else np.zeros((h, w), bool))
    rng = np.random.default_rng(zlib.crc32(f"{sample.sample_id}/{sample.category}/"
                                           f"{sample.defect_type}".encode()))
    score = float(rng.uniform(threshold, 1.0) if sample.label else rng.uniform(0.0, threshold))
    gt_maps = {m: np.asarray(v, np.float32) for m, v in sample.gt_masks.items()
               if m in MODALITIES and v is not None}
    regions = regions_from_mask(mask, mask.astype(np.float32) * score,
                                min_region_area_px=min_region_area_px,
                                defect_type=sample.defect_type, modality_maps=gt_maps,
                                frame=frame) if sample.label else []
    return Detection(anomaly_map=mask.astype(np.float32) * score, pred_mask=mask,
                     pred_score=score, threshold=threshold,
                     # a modality scores high only where its ground truth shows the defect
                     modality_scores={m: (score if not sample.label or gt_maps.get(m, mask).any()
                                          else 0.0) for m in MODALITIES if frame.present[m]},
                     modalities_present=dict(frame.present), regions=regions,
                     model_id="ground-truth")


def writer_prompt(report: dict) -> str:
    """The facts of a reference report as text: everything but the writer's own fields,
    with the candidate regions (location words included)."""
    sensor_type = report.get("sensor_type", "thermal")
    lines = [INSTRUCTION,
             f"- score {report['score']:.3f}, threshold {report['threshold']:.3f}",
             f"- image {report['image_size']['width']}x{report['image_size']['height']} px",
             f"- sensor: {sensor_type}",
             "- modality scores: " + json.dumps(report.get("modality_scores", {})),
             "- missing inputs: " + (", ".join(report["missing_modalities"]) or "none"),
             f"- regions of the predicted mask: {len(report['defects'])}"]
    for d in report["defects"]:
        lines.append("  " + json.dumps({k: d[k] for k in ("type", "confidence", "box", "area_px",
                                                          "centroid_px", "centroid_3d",
                                                          "location", "modalities", "severity")}))
    lines.append("Input names: " + ", ".join(f"{m} = {modality_name(m, sensor_type)}"
                                             for m in MODALITIES))
    return "\n".join(lines)


def make_task(sample: Sample, threshold: float = 0.5, min_region_area_px: int = 16) -> WriterTask:
    det = detection_from_ground_truth(sample, threshold, min_region_area_px)
    reference = build_report(det, sample.frame)
    evidence = Evidence.from_detection(det, min_region_area_px, sample.frame.sensor_type)
    facts = {k: reference[k] for k in FACT_KEYS if k in reference}
    return WriterTask(writer_prompt(reference), evidence, facts, reference)


def aux_tasks(n_good: int = 1, n_defective: int = 3, seed: int = 0, size: int = 128,
              threshold: float = 0.5) -> List[WriterTask]:
    """Writer tasks from the synthetic auxiliary split (never the test split or real data)."""
    from zsg_iad_ros.data.splits import iter_split

    return [make_task(s, threshold) for s in iter_split("aux", n_good, n_defective, seed, size)]


def completion_text(completion) -> str:
    """Text of a TRL completion (a string, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def report_from_completion(text: str, facts: dict):
    """The writer's JSON merged over the fixed facts; the raw text when no JSON object can be
    read (every rule then scores it 0)."""
    match = re.search(r"\{.*\}", text, flags=re.S)
    if match is None:
        return text
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return text
    if not isinstance(obj, dict):
        return text
    report = dict(facts)
    report.update(obj)
    return report


def rule_rewards(completion, task: WriterTask) -> Dict[str, float]:
    """Family -> reward (mean rule score of the family) for one completion."""
    report = report_from_completion(completion_text(completion), task.facts)
    scores = {r.name: r.score for r in run_rules(report, task.evidence)}
    return {fam: float(np.mean([scores[n] for n in names]))
            for fam, names in RULE_FAMILIES.items()}


def make_reward_functions(tasks: Sequence[WriterTask],
                          on_reward: Optional[Callable[[str, object, int, float], None]] = None
                          ) -> List[Callable]:
    """One TRL reward function per rule family; the dataset column `task_index` tells each
    completion's task. `on_reward(family, completion, task_index, reward)` observes every value."""
    funcs = []
    for family in RULE_FAMILIES:
        def reward(prompts, completions, task_index, _family=family, **kwargs) -> List[float]:
            out = []
            for completion, i in zip(completions, task_index):
                value = rule_rewards(completion, tasks[int(i)])[_family]
                if on_reward is not None:
                    on_reward(_family, completion, int(i), value)
                out.append(value)
            return out
        reward.__name__ = f"{family}_reward"
        funcs.append(reward)
    return funcs


def build_dataset(tasks: Sequence[WriterTask]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": t.prompt}], "task_index": i}
                              for i, t in enumerate(tasks)])


def train(model: str, out: str, tasks: Sequence[WriterTask], steps: int = 100, lora: bool = False,
          num_generations: int = 4, batch_size: Optional[int] = None,
          max_completion_length: int = 384, learning_rate: float = 1e-5, temperature: float = 1.0,
          on_reward=None, seed: int = 0):
    """Run GRPO; returns the trainer (its `state.log_history` holds the logged rewards)."""
    import torch
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available()
    batch_size = batch_size or num_generations
    args = GRPOConfig(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size,
        num_generations=num_generations, max_completion_length=max_completion_length,
        learning_rate=learning_rate, temperature=temperature, logging_steps=1,
        report_to="none", save_strategy="no", seed=seed, use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        model_init_kwargs={"dtype": torch.bfloat16 if cuda else torch.float32},
        dataloader_num_workers=0)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    # text-only prompts: the tokenizer is the processing class, also for a VLM checkpoint
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = GRPOTrainer(model=model, reward_funcs=make_reward_functions(tasks, on_reward),
                          args=args, train_dataset=build_dataset(tasks),
                          processing_class=tokenizer, peft_config=peft_config)
    trainer.train()
    return trainer


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="hub id or local path of the writer model")
    p.add_argument("--out", required=True, help="output directory (model, rewards.json)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) only")
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=None,
                   help="completions per step (default: --num-generations)")
    p.add_argument("--max-completion-length", type=int, default=384)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--n-good", type=int, default=2, help="good parts per aux category")
    p.add_argument("--n-defective", type=int, default=8, help="defective parts per aux category")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("steps", "num_generations", "max_completion_length"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.batch_size is not None and a.batch_size % a.num_generations:
        p.error("--batch-size must be a multiple of --num-generations")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tasks = aux_tasks(a.n_good, a.n_defective, a.seed, a.image_size)
    log.info("%d writer tasks from the auxiliary split", len(tasks))
    trainer = train(a.model, a.out, tasks, steps=a.steps, lora=a.lora,
                    num_generations=a.num_generations, batch_size=a.batch_size,
                    max_completion_length=a.max_completion_length,
                    learning_rate=a.learning_rate, seed=a.seed)
    out = Path(a.out)
    trainer.save_model(str(out / "model"))
    rewards = [{k: v for k, v in row.items() if "reward" in k or k == "step"}
               for row in trainer.state.log_history if any("reward" in k for k in row)]
    (out / "rewards.json").write_text(json.dumps(rewards, indent=1))
    last = rewards[-1] if rewards else {}
    print(json.dumps({"steps": trainer.state.global_step, "last": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
