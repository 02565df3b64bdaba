"""Batched greedy evaluation of one model on a list of items, resumable, sharded like the rollout.

    out = evaluate(model, tokenizer, data_cfg, items, results_path="out/intentbench_ckpt.jsonl",
                   batch_size=8, max_new_tokens=2048, layout=layout)
    out.results, out.skipped, out.questions_per_s

Items (see `datasets`) are prepared by `data_cfg.num_workers` threads ahead of the model, put
into batches of `batch_size` questions (prompts left-padded to the prompt buckets, the last batch
filled up with copies whose answers are dropped, so the shapes repeat), and decoded greedily by
`omni_jax.rollout.generate`: the batch is split over the layout's batch devices (data × fsdp
under the default rules) as in the rollout. With a timestamps post-processor
(`omni_jax.timestamps.flags`), each answer of a video question first gets `[Frame N: T.XXs]`
marks in its <think> (matched on that question's video); the row's `output` is then the
post-processed answer (what is scored, the probe included), `output_raw` the model's own and
`timestamps` the match table. Every finished question is scored
(`scoring.score_row`) and appended as one JSON line to `results_path` at once; a restarted
evaluation reads that file and does not redo those questions (a torn last line from a kill is
ignored and its question redone). An item whose media cannot be
read (missing, empty or corrupt file, no video stream, prompt over the cap) is skipped and listed.

Multi-host: every process prepares the same batches and runs the same program (the rollout's
scheme); process 0 decides which questions are done and writes the files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from omni_jax import parallel
from omni_jax.data import processor
from omni_jax.data.collate import collate
from omni_jax.data.errors import BadRecord
from omni_jax.eval import inference, scoring
from omni_jax.model.inputs import prepare_inputs
from omni_jax.rewards.judge import PROMPT
from omni_jax.rewards.people_focus import think_block
from omni_jax.rollout import generate, sampler


@dataclasses.dataclass
class EvalOutput:
    results: list[dict]  # one per evaluated item, in item order (resumed ones included)
    skipped: list[dict]  # {"id", "reason", "message", ...} per item that could not be read
    seconds: float  # wall time of this call's new questions
    new: int  # questions answered by this call (not read back from results_path)

    @property
    def questions_per_s(self) -> float:
        return self.new / self.seconds if self.seconds > 0 else 0.0


def _is_remote(path: str) -> bool:
    return "://" in str(path)


def read_results(path) -> list[dict]:
    """The rows of a results JSONL file ([] when absent); an unparsable line (a write cut short by a
    kill) is dropped."""
    path = str(path)
    if _is_remote(path):
        p = epath.Path(path)
        text = p.read_text() if p.exists() else ""
    else:
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
    return rows


def append_results(path, rows: list[dict]) -> None:
    """Append rows as JSON lines (local: appended and flushed; remote, e.g. gs://: the object is
    rewritten with the new lines, since object stores cannot append)."""
    if not rows:
        return
    text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
    path = str(path)
    if _is_remote(path):
        p = epath.Path(path)
        old = p.read_text() if p.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        p.write_text(old + text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # a torn last line (killed mid-write) must not swallow the next row
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def prepare_item(item, data_cfg, tokenizer) -> dict:
    """Processor inputs of one item (raises BadRecord for unreadable media or a prompt over the cap)."""
    rec = item.record
    kind = "image" if rec.get("image") is not None else "video"
    try:
        messages = inference.question_messages(
            data_cfg, rec["problem"], video=rec.get("video"), image=rec.get("image"), audio=rec.get("audio"),
            options=rec.get("options"), problem_type=rec["problem_type"], instruction=item.instruction)
    except FileNotFoundError as e:  # a remote object that is not there
        raise BadRecord("missing_file", str(e)) from None
    if kind == "video" and rec.get("video_fps") is not None:
        for entry in messages[-1]["content"]:
            if entry.get("type") == "video":
                entry["video_fps"] = rec["video_fps"]
    example = processor.prepare(messages, data_cfg, tokenizer)
    example["record"] = {"id": item.row["id"]}
    return example


def add_judge_ratings(judge, rows: list[dict]) -> None:
    """Set row["judge"] (0–10, None when unrated) from the judge's rating of each row's <think>."""
    for row in rows:
        block = think_block(row["output"].encode("utf-8", "surrogatepass"))
        if block is None:
            row["judge"] = None
            continue
        score, _ = judge.rate(PROMPT.format(reasoning=block.decode("utf-8", "replace").strip()))
        row["judge"] = None if score is None else 10.0 * score


def postprocess(timestamps, item, output: str) -> tuple[str, dict | None]:
    """(answer to score, match table as JSON or None) of one item's decoded answer: `output` as it
    is without a post-processor or for an image question; never raises (an unreadable video leaves
    the answer unchanged, with the reason in the table's message)."""
    if timestamps is None:
        return output, None
    video = item.record.get("video")
    if item.record.get("image") is not None or video is None:
        return output, {"message": "not a video question", "num_frames": 0, "events": []}
    try:
        new, table = timestamps(output, inference.read_media(video))
    except OSError as e:  # a remote video gone since it was read for the question
        return output, {"message": f"video {video}: {e}", "num_frames": 0, "events": []}
    return new, table.to_json()


def _to_host(x) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _agree(mask: np.ndarray) -> np.ndarray:
    """Process 0's value of a host array on every process (which questions are done)."""
    if jax.process_count() == 1:
        return mask
    return np.asarray(multihost_utils.broadcast_one_to_all(mask))


def evaluate(model, tokenizer, data_cfg, items: list, *, results_path=None, batch_size: int = 8,
             max_new_tokens: int = 2048, layout=None, progress: bool = True, desc: str = "eval",
             people_focus_cfg=None, judge=None, cpu_decode_kernel=None, timestamps=None) -> EvalOutput:
    """Answer every item greedily (see the module docstring); returns results, skipped items, speed.

    layout: the `parallel.Layout` (mesh + logical-axis rules) the batches are sharded by; a bare
    Mesh is `Layout(mesh)` (the default rules); None: one device.

    judge: an `omni_jax.rewards.judge.Judge`: each answer's <think> is rated 0–10 (row field `judge`,
    None when the judge could not be reached).
    timestamps: a `omni_jax.timestamps.flags.Postprocessor` (None: answers scored as decoded): see
    the module docstring.
    """
    is_main, layout = jax.process_index() == 0, parallel.as_layout(layout)
    # A multiple of the batch shards: the sampler then prefills the whole batch in one pass.
    shards = sampler.batch_shards(layout)
    batch_size = -(-max(1, int(batch_size)) // shards) * shards
    previous = {r["id"]: r for r in read_results(results_path)} if (results_path and is_main) else {}
    done = _agree(np.array([it.row["id"] in previous for it in items], bool))
    todo = [it for it, d in zip(items, done) if not d]
    new_rows: dict[str, dict] = {}
    skipped: list[dict] = []
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    bar = tqdm(total=len(items), initial=int(done.sum()), desc=desc, unit="q", disable=not (progress and is_main),
               dynamic_ncols=True)
    t0 = time.perf_counter()

    def run(batch_items, examples):
        n = len(examples)
        examples = examples + [examples[-1]] * (batch_size - n)
        batch = collate(examples, data_cfg.prompt_buckets, pad)
        batch.pop("records")
        inputs = prepare_inputs(model.cfg, **batch)
        out = generate(model, inputs, num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0,
                       eos_token_ids=[eos], pad_token_id=pad, layout=layout,
                       cpu_decode_kernel=cpu_decode_kernel)
        tokens, lengths = _to_host(out.tokens), _to_host(out.lengths)
        texts = tokenizer.batch_decode([tokens[i, : lengths[i]] for i in range(n)], skip_special_tokens=True)
        rows = []
        for item, text_, length in zip(batch_items, texts, lengths[:n]):
            output, table = postprocess(timestamps, item, text_)
            row = scoring.score_row(item.row, output, people_focus_cfg=people_focus_cfg)
            if table is not None:
                row["output_raw"], row["timestamps"] = text_, table
            row["completion_tokens"] = int(length)
            rows.append(row)
        if judge is not None and is_main:  # rows are written by process 0 only
            add_judge_ratings(judge, rows)
        if is_main and results_path:
            append_results(results_path, rows)
        for row in rows:
            new_rows[row["id"]] = row
        bar.update(n)
        elapsed = time.perf_counter() - t0
        bar.set_postfix(q_per_s=f"{len(new_rows) / max(elapsed, 1e-9):.2f}", skipped=len(skipped))

    workers = max(1, int(data_cfg.get("num_workers", 2) or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        lookahead = 2 * batch_size + workers
        futures = [pool.submit(prepare_item, it, data_cfg, tokenizer) for it in todo[:lookahead]]
        pending_items, pending_examples = [], []
        for k, item in enumerate(todo):
            if k + lookahead < len(todo):
                futures.append(pool.submit(prepare_item, todo[k + lookahead], data_cfg, tokenizer))
            try:
                example = futures[k].result()
                futures[k] = None
            except BadRecord as e:
                futures[k] = None
                skipped.append({"id": item.row["id"], "bench": item.row.get("bench"), "reason": e.reason,
                                "message": str(e)})
                bar.update(1)
                continue
            pending_items.append(item)
            pending_examples.append(example)
            if len(pending_items) == batch_size:
                run(pending_items, pending_examples)
                pending_items, pending_examples = [], []
        if pending_items:
            run(pending_items, pending_examples)
    seconds = time.perf_counter() - t0
    bar.close()
    results = []
    for it, d in zip(items, done):
        row = previous.get(it.row["id"]) if d else new_rows.get(it.row["id"])
        if row is not None:
            results.append(row)
    return EvalOutput(results, skipped, seconds, len(new_rows))
