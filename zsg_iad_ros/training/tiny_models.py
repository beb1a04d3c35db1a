"""Tiny random-weight Qwen2 / Qwen2-VL checkpoints for tests and dry runs (offline).

They have the real architectures, tokenizer layout and chat templates, so the loading,
prompting, generation and GRPO code paths run unchanged; their weights are random, so what
they write is noise. A real narrator uses a pretrained checkpoint (see docs/REPORT.md).
"""
from __future__ import annotations

from typing import Iterable, Optional

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
#: Text-only chat template (Qwen2 layout).
TEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: Chat template with image placeholders (Qwen2-VL layout).
VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_CORPUS = [
    "Found two defect regions: a crack in the upper left; a scratch in the lower right.",
    "The score 0.82 is at or above the threshold 0.50, so the part is anomalous.",
    "No defect region was found: the score 0.12 is below the threshold, so the part is normal.",
    "Missing input: thermal and depth. Supported by RGB, thermal, X-ray and depth.",
    '{"decision": "anomalous", "defects": [{"type": "hole", "box": [12, 40, 9, 7]}], '
    '"reasoning": "...", "conclusion": "Anomalous: one defect region (hole); reject the part."}',
    "centre right, lower centre, upper centre, centre left, foreign body, color, broken, dent.",
]


def build_tokenizer(out_dir: Optional[str] = None, corpus: Iterable[str] = (),
                    vocab_size: int = 600,
                    chat_template: str = TEXT_CHAT_TEMPLATE):
    """Byte-level BPE tokenizer trained locally on a few sentences (any text stays encodable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_CORPUS) + list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None,
                                   additional_special_tokens=SPECIAL_TOKENS[1:])
    fast.chat_template = chat_template
    fast.padding_side = "left"
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def build_tiny_qwen2(out_dir: str, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> str:
    """Random `Qwen2ForCausalLM` + tokenizer saved to `out_dir`; returns the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(out_dir)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden_size,
                      intermediate_size=2 * hidden_size,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    return str(out_dir)


def build_tiny_qwen2_vl(out_dir: str, hidden_size: int = 64, seed: int = 0,
                        image_side: int = 56) -> str:
    """Random `Qwen2VLForConditionalGeneration` + tokenizer + image processor saved to
    `out_dir`.

    Images are resized to about `image_side`^2 pixels (14 px patches, 2x2 merge), so an image
    costs a handful of tokens.
    """
    import torch
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)

    torch.manual_seed(seed)
    tok = build_tokenizer(None, chat_template=VL_CHAT_TEMPLATE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    half = hidden_size // heads // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # temporal, height, width
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=2,
                         max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": mrope},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         bos_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, embed_dim=32, num_heads=2, hidden_size=hidden_size,
                           mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    model = Qwen2VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    pixels = image_side * image_side
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=pixels // 2, max_pixels=pixels,
        size={"shortest_edge": pixels // 2, "longest_edge": pixels})
    # Saved as the parts a Qwen2-VL checkpoint carries (tokenizer with its chat template, image
    # processor); `AutoProcessor` assembles them where torchvision is installed, and
    # `core.narrator.load_processor` does so without it.
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)
    return str(out_dir)
