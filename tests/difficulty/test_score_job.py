"""mode=score end to end on the tiny model and a small JSONL set with bad rows: records, levels,
resume, plots, skips and strict mode (SPEC 2.1, 2.2; issue 10 items 1 and 5)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs import difficulty_score
from mmjax import rewards
from mmjax.data.skips import DataError
from mmjax.difficulty import cmab, score_file, scoring
from mmjax.jobs import score as score_job
from mmjax.jobs import build
from mmjax.models import sampler
from mmjax.train import preemption

K = 2
RATIOS = (0.0, 0.5)
GOOD = [0, 1, 3, 5, 6, 8]  # rows 2 (corrupt image), 4 (no solution), 7 (its reward raises) are skipped


def _boom(completions, targets, **kwargs):
    """A reward that raises on the target "BOOM" (weight 0: it only tests that a raising reward skips the row)."""
    if any(t == "BOOM" for t in targets):
        raise RuntimeError("reward exploded")
    return [0.0] * len(completions)


if "test_boom" not in rewards.names():
    rewards.register("test_boom")(_boom)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_data")
    rng = np.random.default_rng(0)
    with open(root / "qa.jsonl", "w") as f:
        for i in range(9):
            name = f"qa{i}.png"
            if i == 2:
                (root / name).write_bytes(b"not a png")  # a corrupt image
            else:
                Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(root / name)
            row = {"images": [name], "prompt": "<image>Which colour? A. red B. blue", "task": "choice",
                   "solution": "BOOM" if i == 7 else "A"}
            if i == 4:
                del row["solution"]
            f.write(json.dumps(row) + "\n")
    return str(root / "qa.jsonl")


def _config(path: str, **overrides):
    c = difficulty_score.get_config()
    c.model.hf_dir, c.model.preset, c.tokenizer = "", "tiny", "tiny"
    c.model.dtype = c.model.compute_dtype = "float32"
    c.mesh.data = c.mesh.fsdp = c.mesh.tensor = 1
    c.data.path = path
    c.data.batch_size = 2
    c.data.worker_count = 0  # the recipe reads with 8 worker processes: not for a test
    c.data.min_vision_rows = 16
    c.data.min_pixels = c.data.max_pixels = 56 * 56  # 4 vision tokens a prompt
    c.data.system_prompt = False
    # Two-token answers over {A, .}: "A." and ".A" are right, "AA" and ".." wrong: passes vary in [0, K].
    c.sample.allowed_tokens = ("A", ".")
    c.sample.allow_eos = False
    c.rewards.weights = {"accuracy": 1.0, "test_boom": 0.0}
    c.rewards.options = {"accuracy": {"container": "answer"}}
    s = c.score
    s.ratios, s.attempts, s.max_new_tokens = RATIOS, K, 2
    s.sampler_batch = 6  # 4 masked prompts a batch padded to 6; 2 clean prompts x K padded to 3
    s.cmab_batch = 3
    s.cmab.definition, s.cmab.layer = "code", 1  # the tiny model has 2 layers: `paper` needs 3
    s.progress = False
    s.write_jsonl = True
    c.update_from_flattened_dict(overrides)  # dotted keys, e.g. "optim.freeze_vision"
    return c


@pytest.fixture(scope="module")
def pieces(data):
    c = _config(data)
    tok = build.tokenizer(c)
    return tok, build.model(c, tok)


def _compiles():
    return (sampler._prefill._cache_size(), sampler._decode._cache_size(), sampler._encode._cache_size())


@pytest.fixture(scope="module")
def reference(data, pieces, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    tok, model = pieces
    compiles = []
    summary = score_job.run(_config(data), workdir, tok=tok, model=model,
                            on_batch=lambda i, records: compiles.append(_compiles()))
    return workdir, summary, compiles


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for column in score_file.COLUMNS:
            u, v = x[column], y[column]
            if isinstance(u, float) and math.isnan(u):
                assert isinstance(v, float) and math.isnan(v), (column, x, y)
            else:
                assert u == v, (column, x, y)


@pytest.mark.slow  # score job runs on the tiny model
def test_records_curves_and_levels(reference, data):
    workdir, summary, _ = reference
    records = score_file.read_scores(workdir)
    assert [r["id"] for r in records] == [str(i) for i in GOOD]
    assert [r["source_row"] for r in records] == GOOD
    assert all(r["where"] == f"{data}:{i + 1}" and r["task"] == "choice" for r, i in zip(records, GOOD))
    passes = np.asarray([r["passes"] for r in records])
    assert passes.shape == (len(GOOD), len(RATIOS)) and passes.min() >= 0 and passes.max() <= K
    assert passes.sum() > 0 and passes.min() == 0  # the random model is right sometimes, not always
    assert len({r["pism_level"] for r in records}) >= 2
    for r in records:
        assert r["ratios"] == list(RATIOS) and r["attempts"] == K
        p0, p5 = r["passes"]
        if p0 == 0:
            assert r["lambda_star"] == 0.0 and r["pism_level"] == "unsolved"
        elif p5 == 0:
            assert r["lambda_star"] == 0.5 and r["pism_level"] == "medium"
        else:
            assert math.isnan(r["lambda_star"]) and r["pism_level"] == "easy"
    # CMAB: `code` scores from the 2-token answers, `paper` undefined on 2 layers; levels by SPEC 2.2.
    code = np.asarray([r["cmab_code"] for r in records])
    correct = np.asarray([r["correct"] for r in records])
    assert np.isfinite(code).all() and (code > 0).all()
    assert all(math.isnan(r["cmab_paper"]) for r in records)
    expected = cmab.fixed_levels(code, correct, cmab.CmabConfig(definition="code", layer=1))
    assert [r["cmab_level"] for r in records] == expected.tolist()
    assert summary["records"] == len(GOOD) and summary["scored_this_run"] == len(GOOD)
    assert sum(summary["pism_levels"].values()) == sum(summary["cmab_levels"].values()) == len(GOOD)
    # The JSONL copy holds the same records.
    _same(records, score_file.read_scores(os.path.join(workdir, "scores.jsonl")))


@pytest.mark.slow  # score job runs on the tiny model
def test_bad_rows_are_counted_and_named(reference, data):
    workdir, summary, _ = reference
    assert summary["skipped"] == {"image_unreadable": 1, "missing_field": 1, "reward_error": 1}
    named = "\n".join(summary["skipped_rows"])
    assert f"image_unreadable at {data}:3 (qa2.png)" in named
    assert f"missing_field at {data}:5" in named
    assert f"reward_error at {data}:8" in named and "reward exploded" in named
    assert json.load(open(os.path.join(workdir, "score_summary.json")))["skipped"] == summary["skipped"]


@pytest.mark.slow  # score job runs on the tiny model
def test_plots_exist(reference):
    workdir, _, _ = reference
    for name in ("pism_survival.png", "levels.png", "cmab_scores.png"):
        path = os.path.join(workdir, name)
        assert os.path.getsize(path) > 5000
        assert Image.open(path).size[0] > 500


@pytest.mark.slow  # score job runs on the tiny model
def test_one_compile_per_call_kind_and_padding_compiles_nothing(reference):
    _, summary, compiles = reference
    # 4 batches (the last with one sample): a CMAB call, a clean call (num_generations=K) and a
    # masked call each. Padded sub-batches keep every later call on the first batch's shapes.
    assert summary["batches_this_run"] == 4 and summary["sampler_calls"] == 12
    assert len(compiles) == 4 and compiles[1:] == [compiles[0]] * 3


@pytest.mark.slow  # score job runs on the tiny model
def test_resume_after_a_stop_and_a_crash_equals_one_run(reference, data, pieces, tmp_path):
    ref_dir, _, _ = reference
    tok, model = pieces
    workdir = str(tmp_path)
    first = score_job.run(_config(data, **{"score.max_batches": 1}), workdir, tok=tok, model=model)
    assert first["scored_this_run"] == 2 and len(score_file.read_scores(workdir)) == 2

    def crash(index, records):
        raise RuntimeError("killed after a batch")

    with pytest.raises(RuntimeError, match="killed"):  # dies once its second batch's part is written
        score_job.run(_config(data), workdir, tok=tok, model=model, on_batch=crash)
    last = score_job.run(_config(data), workdir, tok=tok, model=model)
    assert last["already_scored"] == 4 and last["scored_this_run"] == 2
    _same(score_file.read_scores(workdir), score_file.read_scores(ref_dir))


@pytest.mark.slow  # score job runs on the tiny model
def test_sigterm_mid_batch_writes_that_batch_and_the_rerun_equals_one_run(reference, data, pieces, tmp_path,
                                                                         monkeypatch):
    ref_dir, _, _ = reference
    tok, model = pieces
    workdir = str(tmp_path)
    score = scoring.Scorer.score

    def signalled_while_scoring(self, batch):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the first batch
        return score(self, batch)

    monkeypatch.setattr(scoring.Scorer, "score", signalled_while_scoring)
    with pytest.raises(preemption.Preempted, match="after step 1"):
        score_job.run(_config(data), workdir, tok=tok, model=model)
    monkeypatch.setattr(scoring.Scorer, "score", score)
    assert len(score_file.ScoreWriter(workdir).done_ids()) == 2  # the batch in flight was finished and kept
    assert not os.path.exists(os.path.join(workdir, "scores.parquet"))  # no merge of a stopped run
    last = score_job.run(_config(data), workdir, tok=tok, model=model)
    assert last["already_scored"] == 2 and last["scored_this_run"] == 4
    _same(score_file.read_scores(workdir), score_file.read_scores(ref_dir))


@pytest.mark.slow  # score job runs on the tiny model
def test_records_do_not_depend_on_how_samples_are_batched(reference, data, pieces, tmp_path):
    # Three samples a batch instead of two: every sample shares its sampler calls with other
    # samples, at other rows, yet each answer's key follows (sample, ratio, attempt, answer).
    ref_dir, _, _ = reference
    tok, model = pieces
    summary = score_job.run(_config(data, **{"data.batch_size": 3}), str(tmp_path), tok=tok, model=model)
    assert summary["batches_this_run"] == 3
    _same(score_file.read_scores(str(tmp_path)), score_file.read_scores(ref_dir))


@pytest.mark.slow  # score job runs on the tiny model
def test_explicit_prompt_buckets_reach_the_sampler_and_change_no_record(reference, data, pieces, tmp_path,
                                                                         sampler_prompt_lengths):
    # 100 is no bucket of the default rule (it would pad again to 128).
    ref_dir, _, _ = reference
    tok, model = pieces
    score_job.run(_config(data, **{"data.bucket_lengths": (100,)}), str(tmp_path), tok=tok, model=model)
    assert sampler_prompt_lengths and set(sampler_prompt_lengths) == {100}
    ours, ref = score_file.read_scores(str(tmp_path)), score_file.read_scores(ref_dir)
    assert len(ours) == len(ref)
    for x, y in zip(ours, ref):  # pass counts exactly; CMAB sums over more (masked) keys to float32 rounding
        assert x == {c: pytest.approx(v, rel=1e-5, nan_ok=True) if isinstance(v, float) else v for c, v in y.items()}


@pytest.mark.slow  # score job runs on the tiny model
def test_strict_mode_raises_naming_the_row(data, pieces, tmp_path):
    tok, model = pieces
    with pytest.raises(DataError, match=r"image_unreadable at .*qa\.jsonl:3 \(qa2\.png\)"):
        score_job.run(_config(data, **{"data.strict": True}), str(tmp_path), tok=tok, model=model)


@pytest.mark.slow  # score job runs on the tiny model
def test_options_early_stop_and_shared_masks(data, pieces, tmp_path):
    tok, model = pieces
    c = _config(data, **{"score.methods": ("pism",), "score.shared_mask": True,
                         "score.stop_at_first_failure": True})
    summary = score_job.run(c, str(tmp_path), tok=tok, model=model)
    records = score_file.read_scores(str(tmp_path))
    assert len(records) == len(GOOD)
    for r in records:
        p0, p5 = r["passes"]
        assert 0 <= p0 <= K and (p5 == -1 if p0 == 0 else 0 <= p5 <= K)  # stopped after failing 0
        assert r["correct"] == (p0 > 0)
        assert r["cmab_level"] == "" and math.isnan(r["cmab_code"]) and math.isnan(r["cmab_paper"])
    survivors = sum(r["passes"][0] > 0 for r in records)
    # One clean call a batch; a shared-mask call only for batches with a survivor.
    assert summary["sampler_calls"] <= 4 + survivors
    assert not os.path.exists(os.path.join(tmp_path, "cmab_scores.png"))


@pytest.mark.slow  # score job runs on the tiny model
def test_cmab_alone_with_quantile_levels_over_the_whole_set(data, pieces, tmp_path):
    tok, model = pieces
    c = _config(data, **{"score.methods": ("cmab",), "score.cmab.mode": "quantile",
                         "score.cmab.target_mix": (1, 1, 1)})
    score_job.run(c, str(tmp_path), tok=tok, model=model)
    records = score_file.read_scores(str(tmp_path))
    assert len(records) == len(GOOD)
    assert all(r["ratios"] == [] and r["passes"] == [] and r["attempts"] == 0 and r["pism_level"] == ""
               and math.isnan(r["lambda_star"]) for r in records)
    code = np.asarray([r["cmab_code"] for r in records])
    correct = np.asarray([r["correct"] for r in records])
    # Ranked over all 6 records (4 batches), not per batch: the SPEC 2.2 quantile mode's mix.
    expected = cmab.quantile_levels(code, correct, cmab.CmabConfig(definition="code", layer=1, mode="quantile",
                                                                   target_mix=(1, 1, 1)))
    assert [r["cmab_level"] for r in records] == expected.tolist()
    solved = [r["cmab_level"] for r in records if r["correct"]]
    assert len(solved) >= 3 and {solved.count(level) for level in ("easy", "medium", "hard")} <= {
        len(solved) // 3, -(-len(solved) // 3)}


def test_recipe_arguments_pick_the_cmab_definition_and_its_layout():
    paper, code = difficulty_score.get_config(), difficulty_score.get_config("code")
    assert (paper.score.cmab.definition, paper.data.prompt_layout) == ("paper", "image_first")
    assert (code.score.cmab.definition, code.data.prompt_layout) == ("code", "question_first")
    for c in (paper, code):
        score, levels, cmab_cfg, job = build.score_configs(c)
        assert (score.ratios, score.attempts, score.temperature, score.mask_mode) == (
            tuple(round(0.1 * i, 1) for i in range(10)), 10, 0.7, "rectangle")
        assert not score.shared_mask and not score.stop_at_first_failure
        assert (levels.hard_max, levels.medium_max) == (0.4, 0.7)
        assert cmab_cfg.mode == "fixed" and cmab_cfg.target_mix is None and cmab_cfg.layer == 20
        assert c.mode == "score" and c.model.compute_dtype == "bfloat16"


def test_config_errors_name_the_field(data, pieces, tmp_path):
    tok, model = pieces
    with pytest.raises(build.ConfigFieldError, match=r"config.score: .*needs >= 3 decoder layers"):
        score_job.run(_config(data, **{"score.cmab.definition": "paper"}), str(tmp_path), tok=tok, model=model)
    with pytest.raises(build.ConfigFieldError, match=r"config.score: cmab layer 20 is outside the model's 2"):
        score_job.run(_config(data, **{"score.cmab.layer": 20}), str(tmp_path), tok=tok, model=model)
    with pytest.raises(build.ConfigFieldError, match=r"config.score: .*ratios must start with 0"):
        score_job.run(_config(data, **{"score.ratios": (0.1, 0.5)}), str(tmp_path), tok=tok, model=model)
    with pytest.raises(build.ConfigFieldError, match=r"config.score has unknown fields \['ratio'\]"):
        c = _config(data)
        c.score.ratio = 0.5
        score_job.run(c, str(tmp_path), tok=tok, model=model)


@pytest.mark.slow  # score job runs on the tiny model
def test_a_truncated_part_is_moved_aside_and_its_rows_scored_again(reference, data, pieces, tmp_path, caplog):
    ref_dir, _, _ = reference
    tok, model = pieces
    workdir = str(tmp_path)
    parts = os.path.join(workdir, score_file.PARTS_DIR)
    shutil.copytree(os.path.join(ref_dir, score_file.PARTS_DIR), parts)  # a finished run's parts
    bad = os.path.join(parts, "part-000001.parquet")
    lost = pq.read_table(bad).column("id").to_pylist()
    whole = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(whole[: len(whole) // 2])  # a disk that filled up, a copy cut short
    with caplog.at_level(logging.WARNING, logger=score_file.__name__):
        summary = score_job.run(_config(data), workdir, tok=tok, model=model)
    # Kept aside byte for byte, never deleted; no live part took its name.
    assert open(bad + ".corrupt", "rb").read() == whole[: len(whole) // 2] and not os.path.exists(bad)
    assert f"score file part {bad} is unreadable" in caplog.text and f"moved it to {bad}.corrupt" in caplog.text
    assert summary["scored_this_run"] == len(lost) == 2 and summary["already_scored"] == len(GOOD) - len(lost)
    assert [(c["part"], c["moved_to"], c["rows"]) for c in summary["corrupt_parts"]] == [(bad, bad + ".corrupt", None)]
    written = json.load(open(os.path.join(workdir, "score_summary.json")))
    assert written["corrupt_parts"][0]["moved_to"] == bad + ".corrupt"
    # The rescored rows equal the lost ones: the merged file equals the uninterrupted run's.
    _same(score_file.read_scores(workdir), score_file.read_scores(ref_dir))


def _part_record(i: int) -> dict:
    return {"id": str(i), "source_row": i, "where": f"d.jsonl:{i + 1}", "task": "math", "ratios": [0.0],
            "passes": [1], "attempts": 1, "lambda_star": math.nan, "pism_level": "easy", "cmab_paper": math.nan,
            "cmab_code": math.nan, "cmab_level": "", "correct": True}


def test_a_corrupt_part_never_overwrites_an_earlier_one_or_a_live_part(tmp_path, caplog):
    writer = score_file.ScoreWriter(str(tmp_path))
    for i in range(3):
        writer.write([_part_record(i)])
    parts = tmp_path / score_file.PARTS_DIR
    (parts / "part-000000.parquet.corrupt").write_bytes(b"an earlier run's bad part 0")
    (parts / "part-000000.parquet").write_bytes(b"garbage, not parquet")
    third = (parts / "part-000002.parquet").read_bytes()
    writer = score_file.ScoreWriter(str(tmp_path))
    assert writer.done_ids() == {"1", "2"}
    assert (parts / "part-000000.parquet.corrupt").read_bytes() == b"an earlier run's bad part 0"
    assert (parts / "part-000000.parquet.corrupt-2").read_bytes() == b"garbage, not parquet"
    assert [c["moved_to"] for c in writer.corrupt_parts] == [str(parts / "part-000000.parquet.corrupt-2")]
    assert "how many is unknown" in caplog.text
    # The next part is numbered after the highest (3 parts minus one moved aside would reuse part-000002).
    assert writer.write([_part_record(0)]) == str(parts / "part-000003.parquet")
    assert (parts / "part-000002.parquet").read_bytes() == third
    assert [r["id"] for r in score_file.read_scores(writer.finish())] == ["0", "1", "2"]
