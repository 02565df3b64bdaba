"""CLIP's text tokenizer from a HF CLIP directory's tokenizer.json (the `tokenizers` library).

Texts become int32[B, max_length] ids (start and end-of-text tokens added by the file's
post-processor, truncated so the end token stays) and a {0, 1} attention mask; padding uses the
directory's pad token (OpenAI's: "<|endoftext|>"). The length is fixed, so the text tower compiles
once.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np


class CLIPTokenizer:
    def __init__(self, tokenizer, max_length: int, pad_id: int):
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=pad_id, length=max_length)

    @classmethod
    def from_dir(cls, directory, max_length: int = 77, fallback_pad_id: int = 0) -> "CLIPTokenizer":
        import tokenizers  # only text encoding needs it

        d = pathlib.Path(directory)
        path = d / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer.json in {d}: the CLIP directory needs HF's fast tokenizer file")
        tok = tokenizers.Tokenizer.from_file(str(path))
        pad = "<|endoftext|>"
        config = d / "tokenizer_config.json"
        if config.exists():
            value = json.loads(config.read_text()).get("pad_token") or pad
            pad = value.get("content", pad) if isinstance(value, dict) else value
        pad_id = tok.token_to_id(pad)
        return cls(tok, max_length, fallback_pad_id if pad_id is None else pad_id)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(int32[B, max_length] ids, int32[B, max_length] attention mask)."""
        encoded = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], np.int32).reshape(len(encoded), self.max_length)
        mask = np.array([e.attention_mask for e in encoded], np.int32).reshape(len(encoded), self.max_length)
        return ids, mask
