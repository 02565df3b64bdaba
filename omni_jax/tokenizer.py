"""Tokenizers: the real Qwen2.5-Omni one from a local HF directory, or the small one shipped here.

The shipped tokenizer (`omni_jax/assets/tiny_tokenizer/`) is a byte-level BPE with Qwen2.5-Omni's
special tokens. It exists because real weights and tokenizers cannot be downloaded on the machines
that run the tests and the embedded default job; any text is encodable with it (byte fallback), so
every code path that runs on the real tokenizer runs on it too. `python -m omni_jax.tokenizer`
rebuilds it deterministically.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import pathlib
import sys

# Qwen2.5-Omni's added special tokens, in their real id order (151643 ...).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)

TINY_TOKENIZER_DIR = pathlib.Path(__file__).parent / "assets" / "tiny_tokenizer"
TINY_VOCAB_SIZE = 2048  # including the special tokens


def special_token_ids(tokenizer) -> dict[str, int]:
    """Ids of the Qwen special tokens under `tokenizer`, keyed by the names the model config uses."""
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks the Qwen2.5-Omni special tokens {missing}")
    return {
        "pad_token_id": ids["<|endoftext|>"],
        "im_start_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<|im_end|>"],
        "audio_token_id": ids["<|AUDIO|>"],
        "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"],
        "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"],
        "image_token_id": ids["<|IMAGE|>"],
        "video_token_id": ids["<|VIDEO|>"],
    }


@contextlib.contextmanager
def quiet_transformers_import():
    """Import transformers inside this block without its "PyTorch was not found" notice: omni_jax
    uses only its tokenizers and numpy audio utilities, which need no torch."""
    try:
        has_torch = "transformers" in sys.modules or importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: hidden on purpose
        has_torch = False
    if has_torch:
        yield
        return
    old = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = old


def _from_pretrained(p: pathlib.Path, fast_class):
    """The directory's tokenizer class; the generic fast one without importing transformers' auto
    classes (3 s of imports) when the directory asks for nothing else, as the shipped tiny one does."""
    try:
        wanted = json.loads((p / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError) as e:
        raise ValueError(f"{p / 'tokenizer_config.json'} is not readable JSON: {e}") from None
    if wanted in ("PreTrainedTokenizerFast", fast_class.__name__):
        return fast_class.from_pretrained(str(p))
    with quiet_transformers_import():
        from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(p))


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str = "tiny"):
    """Load a tokenizer: "tiny" (shipped), or a local directory with tokenizer.json (an HF checkpoint).

    Returns a `transformers.PreTrainedTokenizerFast` with eos = <|im_end|> and pad = <|endoftext|>,
    as Qwen2.5-Omni's own.
    """
    with quiet_transformers_import():  # the submodule: `from transformers import ...` would also import torch
        from transformers.tokenization_utils_fast import PreTrainedTokenizerFast

    if path == "tiny":
        path = str(TINY_TOKENIZER_DIR)
    p = pathlib.Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {path!r} does not exist: pass 'tiny' or a local HF checkpoint "
            "directory holding tokenizer.json (hub names are not fetched at run time)"
        )
    if (p / "tokenizer_config.json").exists():
        tok = _from_pretrained(p, PreTrainedTokenizerFast)
    elif (p / "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(p / "tokenizer.json"))
    else:
        raise FileNotFoundError(f"{path!r} holds neither tokenizer_config.json nor tokenizer.json")
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = "left"
    return tok


def _training_corpus() -> list[str]:
    """Deterministic English text shaped like the recipe's prompts and completions."""
    words = """
    a an the and or but of in on at to from with by for as is are was were be been being it its this that
    these those there here what which who whom whose why how when where do does did done not no yes can could
    will would should may might must have has had i you we they he she him her his hers their them our us my
    your person people man men woman women boy girl child children individual individuals character characters
    face faces facial expression expressions gesture gestures body posture eye eyes gaze interaction
    interactions emotion emotions feeling mood smile smiles smiling smiled laugh laughs laughing laughed cry
    cries crying cried nod nods nodding nodded wave waves waving waved point points pointing pointed look looks
    looking looked turn turns turning turned sit sits sitting sat stand stands standing stood walk walks walking
    walked talk talks talking talked speak speaks speaking spoke listen listens listening frown frowning hand
    hands head arm arms shoulder voice tone background scene setting lighting location weather time color
    scheme room wall floor sky building outdoor indoor table chair window door car street tree light dark
    red green blue yellow purple orange black white gray pink brown circle square triangle star shape shapes
    moving moves moved left right up down top bottom center corner frame frames video audio sound tone beep
    high low loud quiet first second third then next finally because so therefore however also
    question answer options option correct choose chosen letter single multiple one two three four five six
    seven eight nine ten zero number count many few more less most least same different appears seems shows
    happy sad angry surprised calm nervous excited confused friendly serious
    """.split()
    tags = ["<context>", "</context>", "<think>", "</think>", "<answer>", "</answer>", "Options:", "A.",
            "B.", "C.", "D.", "E.", "F.", "(A)", "(B)", "(C)", "(D)", "\n", "?", ".", ",", ":", ";", "!",
            "'s", "n't", "[Frame", "s]", "**", "Step"]
    sentences = []
    # A fixed linear congruential stream keeps the corpus (and so the merges) reproducible.
    state = 12345
    vocab = words + tags
    for _ in range(20000):
        n = 4 + state % 14
        toks = []
        for _ in range(n):
            state = (1103515245 * state + 12345) % (2**31)
            toks.append(vocab[state % len(vocab)])
        sentence = " ".join(toks)
        if state % 3 == 0:
            sentence = sentence.capitalize()
        sentences.append(sentence)
    sentences += [" ".join(words), " ".join(w.capitalize() for w in words), " ".join(tags)]
    sentences += [str(i) for i in range(1000)]
    return sentences


def build_tiny_tokenizer(out_dir: str | os.PathLike = TINY_TOKENIZER_DIR) -> pathlib.Path:
    """Train the shipped byte-level BPE and write tokenizer.json + tokenizer_config.json to out_dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - len(SPECIAL_TOKENS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m omni_jax.tokenizer",
        description="Rebuild the shipped tiny tokenizer (deterministic) and print where it was written.")
    parser.add_argument("--out_dir", default=str(TINY_TOKENIZER_DIR), help="where to write it (default: the package's)")
    args = parser.parse_args(argv)
    print(build_tiny_tokenizer(args.out_dir))


if __name__ == "__main__":
    main()
