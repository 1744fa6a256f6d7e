"""The batched PISM / CMAB scoring engine behind `mode=score` (SPEC.md 2.1, 2.2).

The host builds masked images, their pixels and the prompts (numpy, PIL); the device
work is the sampler's (`mmjax.models.sampler.generate`). PISM answers K times per mask
ratio with a fresh mask for every attempt (the paper's protocol, SPEC 2.1; `shared_mask`
is not); CMAB answers once per clean sample with capture="cmab". Every sampler call of a
run has one shape per (prompt-length bucket, vision bucket), so it compiles once, and a
host thread builds the next sub-batch while the device samples. What each call sends:
`Scorer`.

Correct: the configured reward (SPEC 2.3: the one accuracy reward) is >= correct_threshold
(0.5: accuracy rewards are 0 or 1; for grounding, whose reward is an area-weighted IoU,
0.5 is the usual detection criterion).

A record is a function of the seed and its sample alone (masks and sampler keys are
seeded by the sample's source row; see `Scorer`), not of the samples it is batched with,
so a resumed job writes the same records as a job that never stopped. Early stop
(`stop_at_first_failure`) is off by default: survival need not be monotone (SPEC 2.1).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmjax.config_help import choice_errors, help_text
from mmjax.data import masking
from mmjax.data.batching import arrays
from mmjax.data.skips import DataError, SkipCounter, Skipped, skip_or_raise
from mmjax.difficulty import cmab as cmab_lib
from mmjax.difficulty import pism as pism_lib
from mmjax.models import batched_generation as batched
from mmjax.models import sampler
from mmjax.models.sampling import SamplingParams
from mmjax.processing.image import preprocess_images

log = logging.getLogger(__name__)

METHODS = ("pism", "cmab")
# Sub-streams of the seed: masks, and one per kind of sampler call.
_MASKS, _CMAB, _SHARED, _SINGLE = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """What to score and how (the `score` section of a recipe, less the job's own fields)."""

    methods: tuple[str, ...] = dataclasses.field(default=METHODS, metadata=help_text(
        "pism and/or cmab (SPEC 2.1, 2.2)", choices=METHODS))
    ratios: tuple[float, ...] = dataclasses.field(default=masking.DEFAULT_RATIOS, metadata=help_text(
        "PISM mask ratios, ascending from 0; SPEC 2.1 0.0, 0.1, ..., 0.9"))
    attempts: int = dataclasses.field(default=10, metadata=help_text(
        "K answers per ratio, survival = pass@K; SPEC 2.1 10"))
    temperature: float = dataclasses.field(default=0.7, metadata=help_text(
        "PISM sampling temperature; SPEC 2.1 0.7"))
    top_p: float = dataclasses.field(default=1.0, metadata=help_text("PISM nucleus mass, 1 = off (mmjax)"))
    top_k: int = dataclasses.field(default=0, metadata=help_text("PISM top-k, 0 = off (mmjax)"))
    max_new_tokens: int = dataclasses.field(default=1024, metadata=help_text(
        "most tokens per answer; SPEC 2.4 max completion 1024"))
    mask_mode: str = dataclasses.field(default="rectangle", metadata=help_text(
        "rectangle (released code, default) | pixels (paper) | patches (mmjax); SPEC 2.1", choices=masking.MODES))
    patch_size: int = dataclasses.field(default=28, metadata=help_text(
        "patches mode: side of a masked patch in px; 28 = one merged vision token (SPEC 2.1)"))
    shared_mask: bool = dataclasses.field(default=False, metadata=help_text(
        "NOT the paper's protocol: one mask per ratio and K answers sharing its prefill "
        "(the paper draws a fresh mask for every attempt, SPEC 2.1)"))
    stop_at_first_failure: bool = dataclasses.field(default=False, metadata=help_text(
        "stop a sample after its first failing ratio (later ratios are -1); off because survival "
        "need not be monotone (SPEC 2.1)"))
    sampler_batch: int = dataclasses.field(default=64, metadata=help_text(
        "completions per PISM sampler call (prompts x num_generations); mmjax"))
    cmab_batch: int = dataclasses.field(default=8, metadata=help_text(
        "prompts per CMAB sampler call (one answer each, attention captured); mmjax"))
    cmab_temperature: float = dataclasses.field(default=0.0, metadata=help_text(
        "CMAB answer temperature, 0 = greedy: one answer per sample, its most likely one (mmjax)"))
    correct_threshold: float = dataclasses.field(default=0.5, metadata=help_text(
        "an answer is correct when its reward >= this; accuracy rewards are 0/1, grounding's IoU "
        "counts from 0.5 (SPEC 2.3)"))
    host_threads: int = dataclasses.field(default=4, metadata=help_text(
        "threads resizing and normalising masked images (PIL releases the GIL); mmjax"))

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        errors = choice_errors(self)  # methods' elements, mask_mode
        if errors:
            raise ValueError("; ".join(errors))
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be a non-empty subset of {METHODS}; got {self.methods!r}")
        object.__setattr__(self, "ratios", tuple(float(r) for r in pism_lib.check_ratios(self.ratios)))
        for name in ("attempts", "max_new_tokens", "patch_size", "sampler_batch", "cmab_batch", "host_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        SamplingParams(self.temperature, self.top_p, self.top_k)  # raises on a bad value
        SamplingParams(self.cmab_temperature)

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k)


@dataclasses.dataclass
class _Slot:
    """One sample of the batch being scored."""
    sample: dict[str, Any]      # the task sample (mmjax.data.tasks.make_sample)
    processed: dict[str, Any]   # ProcessSample output of the clean sample: {"inputs", "meta"}
    passes: np.ndarray          # int64 [R], pism.NOT_RUN where not scored
    cmab: dict[str, Any] = dataclasses.field(default_factory=dict)
    failed: str = ""            # why its reward failed (the sample is then skipped)

    @property
    def row(self) -> int:
        return int(self.sample.get("index", 0))

    @property
    def where(self) -> str:
        return str(self.sample.get("where") or self.sample.get("id") or "?")


@dataclasses.dataclass(frozen=True)
class _Request:
    """One prompt of a sampler call: slot, ratio index, mask index (-1 = the clean image)."""
    slot: int
    ratio: int
    attempt: int


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def mesh_rows(mesh) -> int:
    """Prompts per sampler call must divide over the mesh's batch axes (data x fsdp)."""
    if mesh is None:
        return 1
    return int(np.prod([mesh.shape[a] for a in ("data", "fsdp") if a in mesh.shape]))


class Scorer:
    """Scores batches of task samples; one record (score_file.COLUMNS) per usable sample.

    model: a `mmjax.models.qwen2_5_vl.Qwen2_5_VL` (.module, .params, .config);
    decode: token ids -> text; process: `mmjax.data.batching.ProcessSample` (tokens and
    pixels of the clean sample); batcher: `mmjax.data.batching.Batcher` (prompts -> model
    batch); reward: texts, targets, task=... -> RewardOutput (`mmjax.rewards.combine`).
    Samples it cannot score are recorded in `skips` (reason, file:line) and left out, or
    raise `DataError` naming the row when `strict`.

    For a batch of B samples, mask ratios R (ratios[0] = 0) and K attempts, PISM sends:

      * B clean prompts with num_generations=K: ratio 0 needs no mask, so its K answers
        share one prefill and one vision encoding;
      * B x (R-1) x K masked prompts with num_generations=1: a fresh mask for every attempt,
        the paper's protocol (SPEC 2.1). With `shared_mask` (NOT the paper's protocol) it is
        B x (R-1) prompts, one mask per ratio, with num_generations=K sharing its prefill.

    and CMAB B clean prompts, one answer each, generated with capture="cmab" (its
    correctness comes from that same answer). Prompts with the same num_generations run in
    sub-batches of a fixed prompt count, the last one padded with copies of its last prompt
    whose answers are dropped, so every call of a run has one shape per (prompt-length
    bucket, vision bucket) and compiles once. Each prompt of a call is encoded once, so each
    masked image goes through the vision tower once. While the device samples one
    sub-batch, a host thread builds the next one.

    Determinism: the masks of a sample at a ratio come from an rng seeded by (seed, the
    sample's source row, ratio index), attempt a being the a-th mask drawn; the sampler's key
    for each answer comes from (seed, kind of call, the sample's source row, ratio index,
    attempt, answer index) through `sampler.generate`'s `row_seeds`. So a record is a function
    of the seed and its sample alone, not of the samples it is batched with or the batch sizes
    (up to float rounding: differently padded batches may round a logit differently), and a
    resumed job writes the same records as a job that never stopped.

    Early stop (`stop_at_first_failure`): the ratios are scored one at a time, and a sample
    stops after its first failing ratio; its later ratios hold `pism.NOT_RUN`.
    """

    def __init__(self, model, decode: Callable[[Sequence[int]], str], process, batcher, reward,
                 config: ScoreConfig = ScoreConfig(), pism_levels: pism_lib.PismLevels = pism_lib.PismLevels(),
                 cmab_config: cmab_lib.CmabConfig = cmab_lib.CmabConfig(), *, eos_token_ids: Sequence[int],
                 pad_token_id: int, allowed_token_ids: Sequence[int] | None = None, seed: int = 0,
                 strict: bool = False, skips: SkipCounter | None = None):
        self.model, self.decode, self.process, self.batcher, self.reward = model, decode, process, batcher, reward
        self.cfg, self.pism_levels, self.cmab_cfg = config, pism_levels, cmab_config
        self.eos, self.pad, self.allowed = tuple(eos_token_ids), int(pad_token_id), allowed_token_ids
        self.seed, self.strict = int(seed), strict
        self.skips = skips if skips is not None else SkipCounter()
        self.num_layers = model.config.text.num_hidden_layers
        if "cmab" in config.methods:
            cmab_lib.check_layer(cmab_config.layer, self.num_layers)
            if cmab_config.definition == "paper" and self.num_layers < 3:
                raise ValueError(f"the `paper` CMAB definition averages layers 2..L-1 and needs >= 3 decoder "
                                 f"layers; this model has {self.num_layers} (use definition 'code')")
            if self.num_layers < 3:
                log.warning("CMAB: the model has %d decoder layers; the `paper` score (layers 2..L-1) is "
                            "undefined and recorded as NaN, levels use `code`", self.num_layers)
        rows = mesh_rows(model.mesh)
        k = config.attempts
        self.prompts_single = _round_up(config.sampler_batch, rows)           # num_generations = 1
        self.prompts_shared = _round_up(max(1, config.sampler_batch // k), rows)  # num_generations = K
        self.prompts_cmab = _round_up(config.cmab_batch, rows)
        self._pool = concurrent.futures.ThreadPoolExecutor(config.host_threads)
        self.calls = 0  # sampler calls made (for the benchmark and tests)

    def close(self) -> None:
        self._pool.shutdown()

    # ---- the batch ------------------------------------------------------------------------

    def score(self, samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Records of the usable samples of one batch (others skipped and counted)."""
        slots = [s for s in (self._slot(sample) for sample in samples) if s is not None]
        if not slots:
            return []
        if "cmab" in self.cfg.methods:
            self._cmab(slots)
        if "pism" in self.cfg.methods:
            self._pism(slots)
        records = []
        for slot in slots:
            if slot.failed:
                self.skips.record(Skipped("reward_error", slot.where, slot.failed))
                continue
            records.append(self._record(slot))
        return records

    def _skip(self, sample: dict[str, Any], reason: str, detail: str) -> None:
        where = str(sample.get("where") or sample.get("id") or "?")
        self.skips.record(skip_or_raise(self.strict, reason, where, detail))

    def _slot(self, sample: dict[str, Any]) -> _Slot | None:
        if not sample.get("images"):
            self._skip(sample, "no_image", "PISM masks the image and CMAB weighs attention on it; the row has none")
            return None
        if sample.get("videos") and "pism" in self.cfg.methods:
            self._skip(sample, "video_row", "PISM masks images; masking videos is not defined (SPEC 2.1)")
            return None
        processed = self.process.map(sample)  # raises in strict mode, naming the row
        if isinstance(processed, Skipped):
            self.skips.record(processed)
            return None
        passes = np.full(len(self.cfg.ratios), pism_lib.NOT_RUN, np.int64)
        return _Slot(sample=sample, processed=processed, passes=passes)

    def _record(self, slot: _Slot) -> dict[str, Any]:
        sample, cfg = slot.sample, self.cfg
        rec = {"id": str(sample.get("id", slot.row)), "source_row": slot.row, "where": slot.where,
               "task": str(sample.get("task") or ""), "ratios": [], "passes": [], "attempts": 0,
               "lambda_star": math.nan, "pism_level": "", "cmab_paper": math.nan, "cmab_code": math.nan,
               "cmab_level": ""}
        if "pism" in cfg.methods:
            lam, level = pism_lib.levels(cfg.ratios, slot.passes[None], self.pism_levels)
            rec.update(ratios=list(cfg.ratios), passes=slot.passes.tolist(), attempts=cfg.attempts,
                       lambda_star=float(lam[0]), pism_level=str(level[0]))
        if "cmab" in cfg.methods:
            rec.update(cmab_paper=slot.cmab["paper"], cmab_code=slot.cmab["code"], cmab_level=slot.cmab["level"],
                       correct=slot.cmab["correct"])
        else:
            rec["correct"] = bool(slot.passes[0] > 0)
        return rec

    # ---- CMAB -------------------------------------------------------------------------------

    def _cmab(self, slots: list[_Slot]) -> None:
        requests = [_Request(i, 0, -1) for i in range(len(slots))]
        masses, masks, sizes, texts = [], [], [], []
        for chunk, rollout in self._generate(slots, requests, self.prompts_cmab, 1,
                                             SamplingParams(self.cfg.cmab_temperature), "cmab", _CMAB):
            n = len(chunk)
            masses.append(rollout.attention_masses[:n].mean(axis=3))  # heads averaged first (SPEC 2.2)
            masks.append(rollout.mask[:n])
            sizes.append(rollout.group_sizes[:n])
            texts += self._texts(rollout, n)
        m, mask, size = np.concatenate(masses), np.concatenate(masks), np.concatenate(sizes)
        correct = self._correct(slots, texts, list(range(len(slots))))
        paper = cmab_lib.paper_scores(m, mask) if self.num_layers >= 3 else np.full(len(slots), np.nan)
        code = cmab_lib.code_scores(m, mask, size, self.cmab_cfg.layer)
        # Quantile levels need the whole set: the job levels it again when it ends.
        level_cfg = dataclasses.replace(self.cmab_cfg, mode="fixed")
        chosen = paper if self.cmab_cfg.definition == "paper" else code
        levels = cmab_lib.fixed_levels(chosen, correct, level_cfg)
        for i, slot in enumerate(slots):
            slot.cmab = {"paper": float(paper[i]), "code": float(code[i]), "level": str(levels[i]),
                         "correct": bool(correct[i])}

    # ---- PISM -------------------------------------------------------------------------------

    def _pism(self, slots: list[_Slot]) -> None:
        cfg = self.cfg
        num_ratios = len(cfg.ratios)
        rounds = [[r] for r in range(num_ratios)] if cfg.stop_at_first_failure else [list(range(num_ratios))]
        active = [i for i, s in enumerate(slots) if not s.failed]
        for ratio_indices in rounds:
            shared, single = [], []  # num_generations = K, and = 1
            for i in active:
                for r in ratio_indices:
                    slots[i].passes[r] = 0
                    if r == 0:
                        shared.append(_Request(i, 0, -1))
                    elif cfg.shared_mask:
                        shared.append(_Request(i, r, 0))
                    else:
                        single += [_Request(i, r, a) for a in range(cfg.attempts)]
            done: list[tuple[_Request, list[str]]] = []
            for requests, prompts, g, kind in ((shared, self.prompts_shared, cfg.attempts, _SHARED),
                                               (single, self.prompts_single, 1, _SINGLE)):
                for chunk, rollout in self._generate(slots, requests, prompts, g, cfg.sampling, None, kind):
                    texts = self._texts(rollout, len(chunk) * g)
                    done += [(req, texts[j * g:(j + 1) * g]) for j, req in enumerate(chunk)]
            texts = [t for _, ts in done for t in ts]
            owners = [req.slot for req, ts in done for _ in ts]
            correct = self._correct(slots, texts, owners)
            at = 0
            for req, ts in done:
                slots[req.slot].passes[req.ratio] += int(correct[at:at + len(ts)].sum())
                at += len(ts)
            if cfg.stop_at_first_failure:
                r = ratio_indices[0]
                active = [i for i in active if not slots[i].failed and slots[i].passes[r] > 0]

    # ---- sampler calls ----------------------------------------------------------------------

    def _generate(self, slots, requests: list[_Request], prompts: int, generations: int,
                  sampling: SamplingParams, capture: str | None, kind: int):
        """Yields (requests of the sub-batch, its Rollout) for fixed-size sub-batches of `requests`."""
        cache: dict[tuple[int, int], list[np.ndarray]] = {}  # only the build thread touches it

        def generate(_, chunk, batch):
            return sampler.generate(
                self.model.module, self.model.params, batch, max_new_tokens=self.cfg.max_new_tokens,
                sampling=sampling, num_generations=generations, seed=self.seed,
                row_seeds=self._row_seeds(slots, chunk, prompts, generations, kind),
                eos_token_ids=self.eos, pad_token_id=self.pad, allowed_token_ids=self.allowed,
                capture=capture, mesh=self.model.mesh, bucket_lengths=self.batcher.bucket_lengths)

        for _, chunk, rollout in batched.generate_batches(
                batched.chunks(requests, prompts), lambda chunk: self._build(slots, chunk, prompts, cache), generate):
            self.calls += 1
            yield chunk, rollout

    @staticmethod
    def _row_seeds(slots, chunk: list[_Request], prompts: int, generations: int, kind: int) -> np.ndarray:
        """One sampler row id per answer, from what the answer is (never where it sits); the
        copies padding the sub-batch get 0."""
        seeds = np.zeros(prompts * generations, np.uint32)
        for j, req in enumerate(chunk):
            for k in range(generations):
                seeds[j * generations + k] = _seed(kind, slots[req.slot].row, req.ratio, req.attempt + 1, k)
        return seeds

    def _texts(self, rollout, rows: int) -> list[str]:
        return [self.decode(ids) for ids in rollout.completion_ids()[:rows]]  # the stop token is not text

    def _build(self, slots, chunk: list[_Request], prompts: int, cache) -> dict[str, Any]:
        """The device batch of a sub-batch, padded to `prompts` prompts with copies of its last."""
        images = [None if req.attempt < 0 else [m[0, req.attempt] for m in self._variants(slots, req, cache)]
                  for req in chunk]
        for key in [k for k in cache if k != (chunk[-1].slot, chunk[-1].ratio)]:
            del cache[key]  # requests come in (slot, ratio) order: this sample-ratio is done
        pixels = list(self._pool.map(self._pixels, images))
        processed = []
        for req, pv in zip(chunk, pixels):
            clean = slots[req.slot].processed
            inputs = clean["inputs"] if pv is None else {**clean["inputs"], "pixel_values": pv}
            processed.append({"inputs": inputs, "meta": clean["meta"]})
        return arrays(self.batcher(batched.pad_rows(processed, prompts)))

    def _variants(self, slots, req: _Request, cache) -> list[np.ndarray]:
        """Masked copies [1, A, H, W, C] of each image of the request's sample at its ratio."""
        key = (req.slot, req.ratio)
        if key not in cache:
            slot = slots[key[0]]
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _MASKS, slot.row, req.ratio]))
            attempts = 1 if self.cfg.shared_mask else self.cfg.attempts
            cache[key] = masking.mask_images_by_size(
                [np.asarray(im) for im in slot.sample["images"]], rng, [self.cfg.ratios[req.ratio]], attempts,
                self.cfg.mask_mode, self.cfg.patch_size)
        return cache[key]

    def _pixels(self, images: list[np.ndarray] | None) -> np.ndarray | None:
        if images is None:
            return None
        return preprocess_images(images, self.process.image_cfg)["pixel_values"]

    # ---- rewards ------------------------------------------------------------------------------

    def _correct(self, slots: list[_Slot], texts: list[str], owners: list[int]) -> np.ndarray:
        """bool [len(texts)]: reward >= correct_threshold. A sample whose reward raises is marked failed."""
        if not texts:
            return np.zeros(0, bool)
        values = np.zeros(len(texts))
        try:
            values[:] = self._reward(slots, texts, owners)
        except Exception:  # noqa: BLE001 - find the sample it is, score the others
            owner_array = np.asarray(owners)
            for i in sorted(set(owners)):
                rows = np.flatnonzero(owner_array == i)
                try:
                    values[rows] = self._reward(slots, [texts[j] for j in rows], [i] * len(rows))
                except Exception as e:  # noqa: BLE001
                    detail = f"reward raised {type(e).__name__}: {e}"
                    if self.strict:
                        raise DataError(f"reward_error at {slots[i].where}: {detail}") from e
                    slots[i].failed = detail
        return values >= self.cfg.correct_threshold

    def _reward(self, slots, texts, owners) -> np.ndarray:
        targets = [slots[i].sample["solution"] for i in owners]
        tasks = [slots[i].sample.get("task") for i in owners]
        out = self.reward(texts, targets, task=tasks)
        values = np.asarray(out.total, np.float64)
        if values.shape != (len(texts),):
            raise ValueError(f"the reward returned {values.shape} values for {len(texts)} answers")
        return values
