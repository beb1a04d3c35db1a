"""Optional vision-language narrator: rewrites the reasoning of flagged parts.

A Qwen2-VL-class checkpoint (hub id or local path, loaded offline through transformers'
`AutoModelForImageTextToText` + `AutoProcessor`) sees the RGB image and the report's structured
facts and writes a short reasoning. It runs on a worker thread behind a bounded queue, so the
mask path keeps its rate; when the queue is full the oldest pending request is dropped (and
counted). Its text is used only if the report with it passes every executable rule
(`apply_narration`); otherwise the deterministic text stays.
"""
from __future__ import annotations

import copy
import json
import logging
import queue
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from zsg_iad_ros.core.frame import Detection, Frame
from zsg_iad_ros.core.report import modality_name
from zsg_iad_ros.core.rules import Evidence, location_word, run_rules, strongest_modality

log = logging.getLogger(__name__)

PROMPT_HEADER = (
    "You are the inspection narrator of an industrial anomaly detector. The image shows the "
    "inspected part. Facts measured by the detector:")
PROMPT_FOOTER = (
    "Write two or three sentences of reasoning that state the number of defect regions, the "
    "type and location of each, the inputs that support them and the decision, using only "
    "these facts. Then write one line starting with 'Conclusion:'.")


def build_prompt(report: dict) -> str:
    """Instruction with the report's structured facts, one per line."""
    sensor_type = report.get("sensor_type", "thermal")
    size = (report["image_size"]["width"], report["image_size"]["height"])
    lines = [PROMPT_HEADER,
             f"- decision: {report['decision']} (score {report['score']:.2f}, threshold "
             f"{report['threshold']:.2f})",
             f"- defect regions: {len(report['defects'])}"]
    for i, d in enumerate(report["defects"], 1):
        mods = ", ".join(modality_name(m, sensor_type) for m in d["modalities"]) or "none"
        lines.append(f"  {i}. {d['type'].replace('_', ' ')} in the "
                     f"{location_word(d['centroid_px'], size)}, {d['area_px']} px, "
                     f"{d['severity']}, supported by: {mods}")
    top = strongest_modality(report)
    if not report["defects"] and top is not None:
        lines.append(f"- no region localised; strongest input: {modality_name(top, sensor_type)}")
    missing = ", ".join(modality_name(m, sensor_type) for m in report["missing_modalities"])
    lines.append(f"- missing inputs: {missing or 'none'}")
    lines.append(PROMPT_FOOTER)
    return "\n".join(lines)


def parse_narration(text: str) -> Tuple[str, Optional[str]]:
    """(reasoning, conclusion or None) from a narrator's output: a JSON object with those keys,
    or prose with an optional 'Conclusion:' line."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            reasoning = obj.get("reasoning")
            conclusion = obj.get("conclusion")
            return (reasoning.strip() if isinstance(reasoning, str) else "",
                    conclusion.strip() if isinstance(conclusion, str) else None)
    parts = re.split(r"(?im)^\s*conclusion\s*:\s*", text, maxsplit=1)
    if len(parts) == 2:
        return parts[0].strip(), parts[1].strip() or None
    return text, None


def apply_narration(report: dict, text: str, evidence: Evidence
                    ) -> Tuple[dict, bool, List[dict]]:
    """Put the narrator's text into a copy of `report` and run every rule on it.

    Returns (report, accepted, rule results of the narrated candidate). When accepted, the
    returned report carries the narrated reasoning (and conclusion, if one was written) with
    `reasoning_source` "narrator"; otherwise it is `report` unchanged (deterministic text).
    """
    reasoning, conclusion = parse_narration(text)
    candidate = copy.deepcopy(report)
    candidate["reasoning"] = reasoning
    if conclusion:
        candidate["conclusion"] = conclusion
    candidate["reasoning_source"] = "narrator"
    results = [r.as_dict() for r in run_rules(candidate, evidence)]
    accepted = bool(reasoning) and all(r["passed"] for r in results)
    if not accepted:
        return report, False, results
    candidate["valid"] = True
    return candidate, True, results


def load_processor(model: str):
    """`AutoProcessor` for a checkpoint. Qwen2-VL's processor also builds a video processor
    that needs torchvision; where torchvision is absent the same processor class is assembled
    from the checkpoint's tokenizer and image processor without it (images only), and this is
    logged."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model)
    except ImportError as err:
        if "torchvision" not in str(err).lower():
            raise
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLProcessor

        class _ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
            def check_argument_for_proper_class(self, argument_name, argument):
                if argument_name == "video_processor" and argument is None:
                    return None
                return super().check_argument_for_proper_class(argument_name, argument)

        log.warning("torchvision is not installed: using the Qwen2-VL processor for images only")
        tokenizer = AutoTokenizer.from_pretrained(model)
        return _ImageOnlyQwen2VLProcessor(
            image_processor=AutoImageProcessor.from_pretrained(model), tokenizer=tokenizer,
            video_processor=None, chat_template=tokenizer.chat_template)


@dataclass
class NarrationResult:
    report: dict  # the report to publish (narrated if accepted, deterministic otherwise)
    accepted: bool
    rule_results: List[dict] = field(default_factory=list)
    text: str = ""  # what the narrator wrote ("" when it did not run)
    status: str = "narrated"  # narrated | skipped | dropped | error


class Narrator:
    """Vision-language narrator on a worker thread.

    model: hub id or local path of an image-text-to-text checkpoint (offline: set
    HF_HUB_OFFLINE=1 and give a cached id or a path). device: "cuda" when available, else "cpu"
    when None. queue_size: pending requests kept; a full queue drops its oldest request.
    """

    def __init__(self, model: str, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_new_tokens: int = 160, queue_size: int = 2):
        import torch
        from transformers import AutoModelForImageTextToText

        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = getattr(torch, dtype) if dtype else (
            torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.processor = load_processor(model)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype)
        self.model.to(self.device).eval()
        self.model_id = str(model)
        self.max_new_tokens = int(max_new_tokens)
        self.stats: Dict[str, int] = {"submitted": 0, "skipped": 0, "dropped": 0, "narrated": 0,
                                      "accepted": 0, "rejected": 0, "errors": 0}
        self._queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="narrator", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ generation
    def generate_text(self, frame_rgb: np.ndarray, report: dict) -> str:
        """Narration for one image (H, W, 3) uint8 RGB and its report (greedy decoding)."""
        import torch
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(frame_rgb, dtype=np.uint8))
        messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": build_prompt(report)}]}]
        inputs = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0].strip()

    # ------------------------------------------------------------------ async API
    def submit(self, frame_rgb: Optional[np.ndarray], report: dict, evidence: Evidence,
               callback: Optional[Callable[[NarrationResult], None]] = None
               ) -> "Future[NarrationResult]":
        """Queue a narration; never blocks. Only anomalous reports are narrated: others come
        back at once unchanged (status "skipped"), as do requests without an RGB image."""
        if frame_rgb is not None:
            frame_rgb = np.asarray(frame_rgb)
            if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
                raise ValueError(f"frame_rgb must be (H, W, 3) uint8, got {frame_rgb.shape} "
                                 f"{frame_rgb.dtype}")
        fut: "Future[NarrationResult]" = Future()
        if callback is not None:
            fut.add_done_callback(lambda f: callback(f.result()))
        with self._lock:
            self.stats["submitted"] += 1
            if self._stop.is_set():
                raise RuntimeError("narrator is closed")
            if report.get("decision") != "anomalous" or frame_rgb is None:
                self.stats["skipped"] += 1
                fut.set_result(NarrationResult(report, False, status="skipped"))
                return fut
            while True:
                try:
                    self._queue.put_nowait((frame_rgb, report, evidence, fut))
                    break
                except queue.Full:
                    try:
                        old = self._queue.get_nowait()
                    except queue.Empty:
                        continue
                    self.stats["dropped"] += 1
                    old[3].set_result(NarrationResult(old[1], False, status="dropped"))
        return fut

    def submit_detection(self, frame: Frame, detection: Detection,
                         callback: Optional[Callable[[NarrationResult], None]] = None,
                         min_region_area_px: int = 16) -> "Future[NarrationResult]":
        """`submit` for a finished detection (its `report` from `finalize_report`)."""
        if detection.report is None:
            raise ValueError("detection has no report: run finalize_report first")
        evidence = Evidence.from_detection(detection, min_region_area_px, frame.sensor_type)
        return self.submit(frame.rgb, detection.report, evidence, callback)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            frame_rgb, report, evidence, fut = item
            try:
                text = self.generate_text(frame_rgb, report)
                out, accepted, results = apply_narration(report, text, evidence)
                with self._lock:
                    self.stats["narrated"] += 1
                    self.stats["accepted" if accepted else "rejected"] += 1
                fut.set_result(NarrationResult(out, accepted, results, text))
            except Exception as err:  # the deterministic report is still delivered
                log.error("narration failed: %s", err)
                with self._lock:
                    self.stats["errors"] += 1
                fut.set_result(NarrationResult(report, False, text=f"error: {err}",
                                               status="error"))

    def close(self, timeout: float = 30.0) -> None:
        """Finish the pending requests and stop the worker."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def __enter__(self) -> "Narrator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
