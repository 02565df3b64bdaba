"""Social-IQ 2.0 (four-way multiple choice on ~60 s social-interaction clips) as a TFDS dataset."""

from __future__ import annotations

import pathlib

from omni_jax.data.errors import BadRecord
from omni_jax.data.sources import common

_LETTERS = "ABCD"


def raw_record(row, video_dir: pathlib.Path, key: str) -> dict:
    """A Social-IQ 2.0 QA row (qid, q, vid_name, ts, a0..a3, answer_idx) -> a record."""
    if not isinstance(row, dict):
        raise BadRecord("malformed_row", f"row {key} is a {type(row).__name__}, not an object")
    try:
        answer = _LETTERS[int(row["answer_idx"])]
        options = [f"{_LETTERS[k]}. {row[f'a{k}']}" for k in range(4)]
        return {
            "id": str(row["qid"]), "source": "social_iq2", "data_type": "video",
            "video": str(video_dir / f"{row['vid_name']}.mp4"),
            "problem": row["q"], "problem_type": "multiple choice", "options": options,
            "solution": f"<answer>{answer}</answer>", "answer": answer,
        }
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise BadRecord("malformed_row", f"row {key}: {type(e).__name__} {e}") from None


class SocialIq2(common.ManualBuilder):
    """Social-IQ 2.0, multiple choice with options "A. ..".."D. ..", solution "<answer>X</answer>".

    manual_dir, either the raw release layout:
        qa/qa_train.json, qa/qa_val.json   JSON lines: qid, q, vid_name, ts, a0, a1, a2, a3, answer_idx
        video/<vid_name>.mp4
    (splits "train" and "validation"), or HumanOmniV2's rewritten annotations (IntentTrain):
        *.json / *.jsonl at the top: problem, problem_type, options, solution, path
        <path> relative to manual_dir, e.g. social_iq/<ytid>.mp4
    (split "train").
    """

    name = "omni_social_iq2"
    SOURCE = "social_iq2"

    def _splits(self, root):
        if (root / "qa").is_dir():
            return [s for s in ("train", "validation") if (root / "qa" / self._qa_name(s)).exists()]
        return ("train",)

    @staticmethod
    def _qa_name(split):
        return "qa_train.json" if split == "train" else "qa_val.json"

    def _rows(self, root, split):
        if not (root / "qa").is_dir():
            yield from common.humanomni_rows(root, self.SOURCE)
            return
        path = root / "qa" / self._qa_name(split)  # JSON lines despite the .json name
        for n, row in common.read_json_rows(path, lines=True):
            key = f"{path.name}:{n}"
            if isinstance(row, BadRecord):
                yield key, row
                continue
            try:
                yield key, raw_record(row, root / "video", key)
            except BadRecord as e:
                yield key, e

