"""The training input stream: a weighted, seeded, per-process mixture of sources, in batches.

Determinism: draw d of process p picks its source from a generator seeded (seed, p, d); the k-th
record taken from a source is position k of that source's shard (indices p, p + P, p + 2P, ...)
in an order reshuffled every epoch from (seed, source, p, epoch). Everything is a function of
counters, so the position is the tiny JSON `state()` = {draws, taken per source, counters}, and
`restore(state)` continues exactly, bad records and all.

Bad records are skipped and counted by source and reason: a BadRecord from reading or preparing
one, and any other exception of one record (a field of the wrong type deep in the preparation)
as `malformed_row`, naming the source and the record. A source whose `fail_fast_bad_records`
consecutive records (or every record of its shard) are bad raises DataError, wherever the
run of bad records starts: a source bad from the start, or one whose files went away mid-run.
The length of the current run of bad records is part of the state, so a resume stops at the
same record. Examples are prepared by `num_workers` threads, in order, and batches are built
ahead by a background thread (`prefetch_batches` deep).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import zlib

import numpy as np

from omni_jax.data import example
from omni_jax.data.collate import collate
from omni_jax.data.errors import BadRecord, DataError
from omni_jax.data.sources.registry import open_source
from omni_jax.tokenizer import load_tokenizer, special_token_ids

log = logging.getLogger(__name__)


class Mixture:
    """Iterator of batches (see `collate.collate` for the keys) over weighted sources."""

    def __init__(self, sources: dict, weights: dict, example_fn, *, batch_size: int, buckets,
                 pad_token_id: int, seed: int = 0, process_index: int = 0, process_count: int = 1,
                 num_workers: int = 1, prefetch_batches: int = 2, fail_fast_bad_records: int = 32):
        """sources: name -> random-access source (len, getitem). weights: name -> weight (>= 0).

        example_fn(raw_record) -> `example.prepare_record` output; raises BadRecord to skip.
        """
        active = {k: float(w) for k, w in weights.items() if float(w) > 0}
        if not active:
            raise DataError(f"mixture weights {dict(weights)} leave no source with a positive weight")
        missing = sorted(set(active) - set(sources))
        if missing:
            raise DataError(f"mixture names sources {missing} that were not given (have {sorted(sources)})")
        self._names = sorted(active)
        total = sum(active.values())
        self._cdf = np.cumsum([active[k] / total for k in self._names])
        self._sources = {k: sources[k] for k in self._names}
        self._shards = {}
        for k in self._names:
            shard = np.arange(process_index, len(self._sources[k]), process_count)
            if len(shard) == 0:
                raise DataError(f"source {k!r} has {len(self._sources[k])} records, too few to give each of "
                                f"{process_count} processes one")
            self._shards[k] = shard
        self._example_fn = example_fn
        self._batch_size, self._buckets, self._pad = batch_size, tuple(buckets), pad_token_id
        self._seed, self._pi = int(seed), int(process_index)
        self._num_workers, self._prefetch = max(1, num_workers), max(1, prefetch_batches)
        self._fail_fast = fail_fast_bad_records
        self._state = {"draws": 0, "taken": {k: 0 for k in self._names}, "counters": {}, "bad_run": {}}
        self._thread = None
        self._perm_cache = {}

    # ---- the deterministic schedule ----
    def _source_of(self, draw: int) -> str:
        u = np.random.default_rng([self._seed, self._pi, draw]).random()
        return self._names[min(int(np.searchsorted(self._cdf, u, side="right")), len(self._names) - 1)]

    def _index_of(self, name: str, k: int) -> int:
        shard = self._shards[name]
        epoch, pos = divmod(k, len(shard))
        key = (name, epoch)
        if key not in self._perm_cache:
            self._perm_cache = {kk: v for kk, v in self._perm_cache.items() if kk[0] != name}
            salt = zlib.crc32(name.encode())
            self._perm_cache[key] = np.random.default_rng([self._seed, salt, self._pi, epoch]).permutation(len(shard))
        return int(shard[self._perm_cache[key][pos]])

    def _schedule(self, state):
        draws, taken = state["draws"], dict(state["taken"])
        while True:
            name = self._source_of(draws)
            yield draws, name, self._index_of(name, taken[name])
            taken[name] += 1
            draws += 1

    # ---- work ----
    def _load(self, name: str, index: int):
        try:
            raw = self._sources[name][index]
            return self._example_fn(raw)
        except BadRecord as e:
            return e
        except DataError:  # the source as a whole
            raise
        except Exception as e:  # a fault of this record only (e.g. a field of the wrong type)
            return BadRecord("malformed_row", f"source {name!r} record {index}: {type(e).__name__}: "
                             f"{str(e)[:300]}")

    def _produce(self, out: queue.Queue, stop: threading.Event):
        state = self.state()
        good = collections.Counter()  # good records read by this thread (the error's wording only)
        run = state["bad_run"]  # consecutive bad records per source, up to the newest
        reasons = collections.defaultdict(collections.Counter)  # the reasons within that run
        batch = []
        window = 2 * self._num_workers
        try:
            with concurrent.futures.ThreadPoolExecutor(self._num_workers, thread_name_prefix="omni-data") as pool:
                pending = collections.deque()
                schedule = self._schedule(state)
                while not stop.is_set():
                    while len(pending) < window:
                        d, name, idx = next(schedule)
                        pending.append((name, idx, pool.submit(self._load, name, idx)))
                    name, idx, fut = pending.popleft()
                    result = fut.result()
                    state["draws"] += 1
                    state["taken"][name] += 1
                    c = state["counters"]
                    if isinstance(result, BadRecord):
                        key = f"skipped/{name}/{result.reason}"
                        c[key] = c.get(key, 0) + 1
                        run[name] = run.get(name, 0) + 1
                        reasons[name][result.reason] += 1
                        log.warning("skipping record %d of source %s: %s", idx, name, result)
                        # A shard smaller than the limit: 2L - 1 consecutive draws always hold one
                        # whole epoch, so every record of it was bad.
                        limit = min(self._fail_fast, 2 * len(self._shards[name]) - 1)
                        if run[name] >= limit:
                            where = "first" if good[name] == 0 and state["taken"][name] == run[name] else "last"
                            raise DataError(
                                f"source {name!r}: the {where} {run[name]} records read were all bad "
                                f"({dict(reasons[name]) if len(reasons[name]) else 'see the warnings above'}); "
                                "check the dataset (paths, files still present, format) before training "
                                f"(data.fail_fast_bad_records={self._fail_fast} consecutive bad records stop a run)")
                        continue
                    run[name] = 0
                    reasons[name].clear()
                    good[name] += 1
                    c[f"examples/{name}"] = c.get(f"examples/{name}", 0) + 1
                    batch.append(result)
                    if len(batch) == self._batch_size:
                        snapshot = {"draws": state["draws"], "taken": dict(state["taken"]), "counters": dict(c),
                                    "bad_run": dict(run)}
                        item = (collate(batch, self._buckets, self._pad), snapshot)
                        batch = []
                        while not stop.is_set():
                            try:
                                out.put(item, timeout=0.1)
                                break
                            except queue.Full:
                                pass
                for _, _, fut in pending:
                    fut.cancel()
        except BaseException as e:  # handed to the consumer, raised there
            out.put(e)

    # ---- iterator protocol ----
    def _start(self):
        self._queue = queue.Queue(self._prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop), daemon=True,
                                        name="omni-data-prefetch")
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self._state = item
        return batch

    def state(self) -> dict:
        """JSON-able position after the last batch returned: {draws, taken: {source: n}, counters, bad_run}."""
        return {"draws": self._state["draws"], "taken": dict(self._state["taken"]),
                "counters": dict(self._state["counters"]), "bad_run": dict(self._state.get("bad_run", {}))}

    def restore(self, state: dict) -> None:
        """Continue from a `state()`; the following batches equal those that followed it."""
        if sorted(state["taken"]) != self._names:
            raise DataError(f"data state is for sources {sorted(state['taken'])}, this mixture has {self._names}")
        self.close()
        self._state = {"draws": int(state["draws"]), "taken": {k: int(v) for k, v in state["taken"].items()},
                       "counters": dict(state.get("counters", {})),
                       "bad_run": {k: int(v) for k, v in state.get("bad_run", {}).items()}}

    def counters(self) -> dict[str, int]:
        """Flat counts for metrics: examples/<source>, skipped/<source>/<reason> (as of the last batch)."""
        return dict(self._state["counters"])

    def close(self) -> None:
        """Stop the background thread (a later next() starts it again from state())."""
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(0.05)
            self._thread = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def from_config(cfg, tokenizer=None, *, process_index: int | None = None, process_count: int | None = None,
                sources: dict | None = None) -> Mixture:
    """The mixture the data config describes: cfg.mixture weights, sources opened by name.

    process_index / process_count default to jax.process_index() / jax.process_count().
    sources: name -> source, to use instead of opening them (tests, custom manifests).
    """
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    tokenizer = tokenizer or load_tokenizer("tiny")
    weights = dict(cfg.mixture)
    if max(cfg.prompt_buckets) < cfg.max_prompt_tokens:
        raise DataError(f"max_prompt_tokens={cfg.max_prompt_tokens} exceeds the largest prompt bucket "
                        f"{max(cfg.prompt_buckets)}: add a bucket or lower the cap")
    given = dict(sources or {})
    opened = {k: given[k] if k in given else open_source(k, cfg) for k, w in weights.items() if float(w) > 0}
    return Mixture(
        opened, weights, lambda raw: example.prepare_record(raw, cfg, tokenizer),
        batch_size=cfg.batch_size, buckets=cfg.prompt_buckets,
        pad_token_id=special_token_ids(tokenizer)["pad_token_id"], seed=cfg.seed,
        process_index=process_index, process_count=process_count, num_workers=cfg.num_workers,
        prefetch_batches=cfg.prefetch_batches, fail_fast_bad_records=cfg.fail_fast_bad_records)
