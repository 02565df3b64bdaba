"""CLIP's text tokenizer from a HF CLIP directory's tokenizer.json (the `tokenizers` library).

Texts become int32[B, L] ids (start and end-of-text tokens added by the file's post-processor,
truncated to max_length so the end token stays) and a {0, 1} attention mask; padding uses the
directory's pad token (OpenAI's: "<|endoftext|>"). L is the longest text rounded up to a multiple
of `bucket` (at most max_length): the text tower is causal and pools at the end-of-text token, so
the padding length does not change the embeddings, and short event phrases (~10-20 tokens) cost a
fraction of a 77-token pass while the tower compiles once per bucket (5 at most for CLIP's 77).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np


class CLIPTokenizer:
    def __init__(self, tokenizer, max_length: int, pad_id: int, bucket: int = 16):
        self._tok = tokenizer
        self.max_length, self.pad_id, self.bucket = max_length, pad_id, bucket
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.no_padding()

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
        """(int32[B, L] ids, int32[B, L] attention mask), L a multiple of `bucket` or max_length."""
        encoded = self._tok.encode_batch(list(texts))
        longest = max((len(e.ids) for e in encoded), default=1)
        length = min(self.max_length, -(-longest // self.bucket) * self.bucket)
        ids = np.full((len(encoded), length), self.pad_id, np.int32)
        mask = np.zeros((len(encoded), length), np.int32)
        for row, e in enumerate(encoded):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return ids, mask
