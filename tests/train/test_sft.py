"""SFT (mode=sft) on the tiny model: which tokens carry loss, exact accumulation, frozen vision,
learning fixed answers, exact resume, bad rows, and GRPO starting from the result."""

import json
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import demo as demo_config
from mmjax.data import skips
from mmjax.data.batching import Batcher, ProcessSample, arrays
from mmjax.data.sft import AnswerTokens, SftBatcher, answer_text
from mmjax.data.synthetic import ColourChoiceSource
from mmjax.jobs import grpo as grpo_job
from mmjax.jobs import build
from mmjax.jobs import sft as sft_job
from mmjax.models import sampler
from mmjax.processing import ImageProcessorConfig, special_token_ids
from mmjax.train import checkpoints, preemption
from mmjax.train import update as update_lib
from mmjax.train.sft import SFTLoss, SFTMicroBatch
from mmjax.train.metrics import read_metrics

STEPS = 60  # 4 fixed samples, one batch a step: 60 epochs
# Every batch here has 4 (or 2) rows of one 56 px image and a prompt of at most 96 tokens, so
# the whole file compiles the SFT step for two shapes only.


def _config(**overrides):
    """The demo's tiny model and 56 px colour images; SFT as SPEC 2.4 (ViT and merger frozen)
    but at a learning rate a random-init tiny model learns with."""
    c = demo_config.get_config()
    c.mode = "sft"
    c.data.num_samples = 4
    c.data.batch_size = 4
    c.max_steps = 0  # the run is sft.num_epochs passes
    c.sft.num_epochs = STEPS
    c.save_steps = 20
    c.optim.learning_rate = 3e-3
    c.optim.schedule = "constant"
    c.optim.freeze_vision = True
    c.optim.freeze_merger = True
    c.update_from_flattened_dict(overrides)  # dotted keys, e.g. "optim.freeze_vision"
    return c


@pytest.fixture(scope="module")
def tok():
    return build.tokenizer(_config())


@pytest.fixture(scope="module")
def tiny_model(tok):
    return build.model(_config(), tok)


def _host(params):
    return jax.tree.map(np.asarray, params)


def _trainer(config, workdir, tok, tiny_model):
    """An SFT Trainer on a copy of the initial params (a run donates its params' buffers; a
    copy also spares the seconds a fresh random init compiles for)."""
    fresh = tiny_model.replace(params=jax.tree.map(jnp.copy, tiny_model.params))
    return sft_job.build_trainer(config, str(workdir), tok=tok, model=fresh)


def _train(config, workdir, tok, tiny_model):
    trainer = _trainer(config, workdir, tok, tiny_model)
    last = trainer.train()
    return trainer, read_metrics(str(workdir)), last


@pytest.fixture(scope="module")
def trained(tok, tiny_model, tmp_path_factory):
    """One uninterrupted SFT run of STEPS steps on 4 fixed samples."""
    workdir = tmp_path_factory.mktemp("sft_full")
    build.write_resolved_config(_config(), str(workdir))  # as the job does: a workdir has a config.json too
    trainer, rows, _ = _train(_config(), workdir, tok, tiny_model)
    return workdir, trainer, rows


def _processed(tok, tiny_model, rows):
    """What the pipeline's workers make of `rows`: task transform, ProcessSample, answer tokens."""
    c = _config()
    transforms = build.transforms(c.data, tok, tiny_model)
    answers = AnswerTokens(tok, special_token_ids(tok).eos_token_ids[0])
    out = []
    for row in rows:
        for t in [*transforms, answers]:
            row = t.map(row)
        out.append(row)
    return out


def _batcher(tok, tiny_model):
    c = _config()
    pad = special_token_ids(tok).pad_token_id
    spec = tiny_model.config.input_spec(min_vision_rows=c.data.min_vision_rows, max_pixels=c.data.max_pixels)
    return SftBatcher(Batcher(pad_id=pad, spec=spec), pad_id=pad)


# ---- the loss ------------------------------------------------------------------------------

def _loss(tiny_model, batch):
    """The SFT step's own loss (sum, count) of a batch: the Trainer's jitted gradient function."""
    micro = SFTMicroBatch(batch=arrays(batch), answers={k: jnp.asarray(batch[k]) for k in ("targets", "target_mask")})
    _, stats = update_lib.microbatch_grads(tiny_model.params, micro, loss_fn=SFTLoss(tiny_model.module),
                                           freeze_vision=True, freeze_merger=True)
    return stats["loss"]


QUESTION = "\n".join([ColourChoiceSource.QUESTION, "Options:", "A. red", "B. green", "C. blue", "D. yellow",
                      "Answer with the option letter."])  # the colour rows' prompt, so its length too


def test_only_the_answer_and_eos_carry_loss(tok, tiny_model):
    """Four hand-built samples (prompts of different lengths, so left padding, each with an
    image; answers of 2 to 14 tokens, plain and in the think format): the loss is exactly
    -sum log p of the answer tokens and EOS, read from the model's full-sequence logits;
    prompt, image and padding positions carry none."""
    process = ProcessSample(tok, image_cfg=ImageProcessorConfig(min_pixels=56 * 56, max_pixels=56 * 56))
    eos = special_token_ids(tok).eos_token_ids[0]
    rng = np.random.default_rng(0)
    cases = [(QUESTION, "A", "plain"), ("Colour?", "B", "think"), ("Name a long thing, slowly.", "a blue sky", "plain"),
             ("Which one is it, then?", "C", "plain")]
    processed = []
    for i, (text, solution, answer_format) in enumerate(cases):
        sample = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                  "images": [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)], "solution": solution,
                  "container": "answer", "where": f"hand:{i}"}
        processed.append(AnswerTokens(tok, eos, answer_format=answer_format).map(process.map(sample)))
    batch = _batcher(tok, tiny_model)(processed)
    answers = [tok.encode(answer_text(s, f), add_special_tokens=False) + [eos] for _, s, f in cases]
    assert len({len(a) for a in answers}) == 3
    for row, ids in enumerate(answers):  # targets: answer + EOS, then padding the mask excludes
        n = len(ids)
        np.testing.assert_array_equal(batch["targets"][row, :n], ids)
        np.testing.assert_array_equal(batch["target_mask"][row], np.arange(batch["targets"].shape[1]) < n)
    assert not batch["attention_mask"][1].all()  # the shorter prompts are left-padded

    got = _loss(tiny_model, batch)
    assert int(got.count) == sum(len(a) for a in answers)

    # The reference: prompt + answer as one plain sequence per row (right-padded into one
    # batch, which causal attention never lets reach a real position), full-sequence logits.
    prompts = [p["inputs"]["input_ids"] for p in processed]
    full = [np.concatenate([q, a]) for q, a in zip(prompts, answers)]
    width = max(len(f) for f in full)
    ids = np.stack([np.pad(f, (0, width - len(f))) for f in full])
    mask = np.arange(width)[None] < np.array([len(f) for f in full])[:, None]
    logits = tiny_model.logits(ids, mask, pixel_values=np.concatenate([p["inputs"]["pixel_values"] for p in processed]),
                           image_grid_thw=np.concatenate([p["inputs"]["image_grid_thw"] for p in processed]))
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
    # answer token j sits at len(prompt) + j and is predicted by the position before it
    expected = -sum(logp[row, len(q) + j - 1, t] for row, (q, a) in enumerate(zip(prompts, answers))
                    for j, t in enumerate(a))
    np.testing.assert_allclose(float(got.total), expected, rtol=1e-5)

    # What sits under the mask's False positions changes nothing.
    noisy = {**batch, "targets": np.where(batch["target_mask"], batch["targets"], 7)}
    assert float(_loss(tiny_model, noisy).total) == float(got.total)


def test_one_or_two_micro_batches_give_the_same_step(tok, tiny_model, tmp_path):
    """Token mean over the whole step whatever the split: with answers of unequal length
    (8 vs 4 answer tokens), a mean of per-micro-batch means would differ."""
    rows = [ColourChoiceSource(4, size=(56, 56))[i] for i in range(4)]
    processed = _processed(tok, tiny_model, rows)
    eos = special_token_ids(tok).eos_token_ids[0]
    processed[0] = {**processed[0], "target": np.asarray(tok.encode("A, the red one", add_special_tokens=False)
                                                         + [eos], np.int32)}
    batcher = _batcher(tok, tiny_model)
    trainer = _trainer(_config(), tmp_path, tok, tiny_model)
    prepare = lambda batches: trainer.objective.prepare(tiny_model.params, batches, 0, None)  # noqa: E731
    one = prepare([batcher(processed)])
    two = prepare([batcher(half) for half in (processed[:2], processed[2:])])
    halves = [prepare([batcher(half)]).answer_tokens for half in (processed[:2], processed[2:])]
    assert one.answer_tokens == two.answer_tokens == sum(halves) != 4 * halves[1]

    def grads(example):  # what the Trainer divides once: the summed numerators' gradients / tokens
        out = [trainer._grads(tiny_model.params, m) for m in example.micro_batches]
        count = sum(int(s["loss"].count) for _, s in out)
        return jax.tree.map(lambda *g: np.asarray(sum(g)) / count, *[g for g, _ in out])

    full, split = grads(one), grads(two)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(split)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4 * np.abs(a).max())  # float32 sums, reordered
    assert not any(np.any(g) for g in jax.tree.leaves(full["visual"]))  # frozen: cut from the backward pass

    def step(example):
        params = jax.tree.map(jnp.copy, tiny_model.params)  # the update donates them
        _, _, stats, grad_norm = trainer._update(params, trainer.optimizer.init(params), example)
        return float(stats["loss"].value()), float(grad_norm)

    (loss1, norm1), (loss2, norm2) = step(one), step(two)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-6)
    np.testing.assert_allclose(norm2, norm1, rtol=1e-5)  # the divided gradients, before clipping


# ---- training ------------------------------------------------------------------------------

@pytest.mark.slow  # a whole run of the job
def test_sft_learns_the_answers_with_the_vision_tower_frozen(trained, tiny_model, tok):
    workdir, trainer, rows = trained
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # sft.num_epochs passes, one step each
    assert rows[-1]["data/epoch"] == STEPS - 1
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < first / 50, (first, last)
    for name in ("loss", "entropy", "grad_norm", "learning_rate", "tokens/answer", "data/skipped"):
        assert name in rows[-1], name

    before, after = _host(tiny_model.params), _host(trainer.model.params)
    for a, b in zip(jax.tree.leaves(before["visual"]), jax.tree.leaves(after["visual"])):
        np.testing.assert_array_equal(a, b)  # vision tower and merger: not a bit moved
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(before["language_model"]), jax.tree.leaves(after["language_model"])))
    assert moved > 1e-3

    # Greedy answers to the 4 training prompts are the targets, EOS included.
    ids = special_token_ids(tok)
    batch = next(iter(build.sft_dataset(_config(), tok, trainer.model)))
    out = sampler.generate(trainer.model.module, trainer.model.params, arrays(batch), max_new_tokens=4,
                           eos_token_ids=ids.eos_token_ids, pad_token_id=ids.pad_token_id)
    for row in range(len(out.tokens)):
        n = int(batch["target_mask"][row].sum())
        np.testing.assert_array_equal(out.tokens[row, :n], batch["targets"][row, :n])
        assert out.lengths[row] == n and out.stopped[row]
    assert sorted(batch["meta"]["solution"]) == ["A", "B", "C", "D"]  # one of each: the image decides


class _Killed(Exception):
    pass


@pytest.mark.slow  # a whole run of the job
def test_a_run_killed_mid_step_resumes_to_the_same_params(trained, tok, tiny_model, tmp_path, monkeypatch):
    """Crash inside step 15 (checkpoint at 10), start again: at step 20 the params and the
    logged losses equal the uninterrupted run's (its step-20 checkpoint), bit for bit, and no
    step is logged twice: the same run (schedule of 60 steps) cut at max_steps 20."""
    full_workdir, _, full_rows = trained
    config = _config(max_steps=20, save_steps=10, **{"optim.total_steps": STEPS})
    trainer = _trainer(config, tmp_path, tok, tiny_model)
    real, calls = trainer._update, []

    def update(*args):
        calls.append(1)
        if len(calls) == 15:
            raise _Killed
        return real(*args)

    monkeypatch.setattr(trainer, "_update", update)
    with pytest.raises(_Killed):
        trainer.train()
    assert checkpoints.restore_latest(str(tmp_path)).step == 10
    resumed, rows, _ = _train(config, tmp_path, tok, tiny_model)
    reference = checkpoints.restore_params(os.path.join(checkpoints.checkpoint_dir(str(full_workdir)), "20"))
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(_host(resumed.model.params))):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows[:20]]


@pytest.mark.slow  # a whole run of the job
def test_sigterm_mid_step_saves_that_step_exits_and_resumes_to_the_same_params(trained, tok, tiny_model, tmp_path,
                                                                              monkeypatch):
    """SIGTERM inside step 13 (checkpoints every 10): the step finishes, is saved as checkpoint
    13 and the run raises Preempted (exit 75 from the CLI) with nothing lost; the rerun's step
    20 equals the uninterrupted run's bit for bit, and no step is logged twice."""
    full_workdir, _, full_rows = trained
    config = _config(max_steps=20, save_steps=10, **{"optim.total_steps": STEPS})
    trainer = _trainer(config, tmp_path, tok, tiny_model)
    real, calls = trainer._update, []

    def update(*args):
        calls.append(1)
        if len(calls) == 13:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, in the middle of a step
        return real(*args)

    monkeypatch.setattr(trainer, "_update", update)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Preempted) as stopped:
        trainer.train()
    assert stopped.value.step == 13 and len(calls) == 13  # the step in flight finished, no other began
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second signal would kill at once
    signal.signal(signal.SIGTERM, before)
    assert sorted(os.listdir(checkpoints.checkpoint_dir(str(tmp_path))), key=int) == ["1", "10", "13"]
    assert [r["step"] for r in read_metrics(str(tmp_path))] == list(range(1, 14))
    resumed, rows, _ = _train(config, tmp_path, tok, tiny_model)
    reference = checkpoints.restore_params(os.path.join(checkpoints.checkpoint_dir(str(full_workdir)), "20"))
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(_host(resumed.model.params))):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows[:20]]


# ---- bad rows ------------------------------------------------------------------------------

def _jsonl(tmp_path, bad: dict[int, dict]) -> str:
    """4 good rows (the colour prompts' length and image size, so compiles are shared) with
    `bad` rows inserted at the given 1-based lines."""
    rng = np.random.default_rng(1)
    lines, good = [], 0
    for line in range(1, 5 + len(bad)):
        if line in bad:
            lines.append(bad[line])
            continue
        Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(tmp_path / f"{good}.png")
        lines.append({"images": [f"{good}.png"], "prompt": "<image>" + QUESTION, "solution": "ABCD"[good],
                      "task": "choice"})
        good += 1
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


BAD = {2: {"images": ["broken.png"], "prompt": "<image>" + QUESTION, "solution": "A"},
       4: {"images": ["0.png"], "prompt": "<image>" + QUESTION},
       5: {"images": ["0.png"], "prompt": "<image>" + QUESTION, "solution": " "}}


def _jsonl_config(path, **kw):
    return _config(**{"data.source": "jsonl", "data.path": path, **kw})


def test_bad_rows_are_skipped_counted_and_named(tok, tiny_model, tmp_path, caplog):
    """A corrupt image, a row without a solution and one with a blank solution: each skipped,
    counted in the metrics and logged with its file and line; the run trains on the rest and
    stops, with a checkpoint, where the data ends."""
    path = _jsonl(tmp_path, BAD)
    c = _jsonl_config(path, **{"sft.num_epochs": 2, "save_steps": 100})
    trainer, rows, last = _train(c, tmp_path / "w", tok, tiny_model)
    assert trainer.cfg.max_steps == 3  # 2 passes over 7 rows, in batches of 4 ...
    assert [r["step"] for r in rows] == [1, 2]  # ... but only the 8 good samples make batches
    assert checkpoints.restore_latest(str(tmp_path / "w")).step == 2  # saved where the data ended
    assert 0 < rows[0]["data/skipped"] <= rows[-1]["data/skipped"] < 6  # logged as they happen
    assert last["data/skipped"] == 6  # and the whole count at the end
    assert (last["data/skipped/image_unreadable"], last["data/skipped/missing_field"],
            last["data/skipped/missing_solution"]) == (2, 2, 2)
    for line in (2, 4, 5):
        assert f"{path}:{line}" in caplog.text


@pytest.mark.parametrize("line,reason", [(2, "image_unreadable"), (4, "missing_field"), (5, "missing_solution")])
def test_strict_mode_raises_naming_the_file_and_line(tok, tiny_model, tmp_path, line, reason):
    path = _jsonl(tmp_path, {line: BAD[line]})
    c = _jsonl_config(path, **{"data.strict": True, "sft.num_epochs": 1})
    with pytest.raises(skips.DataError, match=re.escape(f"{reason} at {path}:{line}")):
        for _ in build.sft_dataset(c, tok, tiny_model):
            pass


# ---- the recipe ----------------------------------------------------------------------------

@pytest.mark.parametrize("arg", [None, "tpu"])
def test_the_sft_recipe_follows_spec_2_4_and_runs(arg, tok, tiny_model, tmp_path):
    from configs import sft as sft_recipe
    c = sft_recipe.get_config(arg)
    assert c.mode == "sft" and c.max_steps == 0 and c.sft.num_epochs == 5
    o = c.optim
    assert (o.learning_rate, o.schedule, o.warmup_ratio, o.freeze_vision, o.freeze_merger) == (
        1e-6, "cosine", 0.1, True, True)
    assert c.data.system_prompt and c.data.task == "qa"  # the prompt GRPO trains on afterwards
    assert c.data.max_prompt_length + c.sft.max_answer_length == 2048
    assert (c.tokenizer, c.model.compute_dtype, c.model.remat) == ("hf", "bfloat16", "full")
    assert (c.mesh.fsdp, c.mesh.tensor) == ((8, -1) if arg else (8, 1)) and c.data.batch_size == (1 if arg else 8)
    if arg:
        return
    # Two steps on tiny data. The model is this file's tiny one (its layout is the 7B's
    # otherwise, see tests/test_recipes.py) and the system prompt is off, which keeps the
    # batches in the shapes compiled above; the rest runs as the recipe sets it.
    c.tokenizer = "tiny"
    c.data.path = _jsonl(tmp_path, {})
    c.data.batch_size, c.data.worker_count, c.data.system_prompt = 4, 0, False
    c.data.min_vision_rows, c.data.min_pixels, c.data.max_pixels = 16, 56 * 56, 56 * 56
    c.sft.num_epochs = 2
    c.mesh.fsdp = 1  # one CPU device
    trainer, rows, _ = _train(c, tmp_path / "w", tok, tiny_model)
    assert trainer.cfg.max_steps == 2 and trainer.optim_config.total_steps == 2
    assert [r["step"] for r in rows] == [1, 2]
    np.testing.assert_allclose([r["learning_rate"] for r in rows], [0.0, 1e-6])  # warmup: ceil(0.1 x 2) = 1 step
    before, after = _host(tiny_model.params)["visual"], _host(trainer.model.params)["visual"]
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


# ---- GRPO after SFT ------------------------------------------------------------------------

def _grpo_config(init_from):
    c = demo_config.get_config()
    c.mode = "grpo"
    c.data.batch_size = 4
    c.grpo.num_generations = 2
    c.init_from = str(init_from)
    return c


def _leaf(params):
    return np.asarray(params["language_model"]["embed_tokens"]["embedding"])


def _adam_count(opt_state):
    """The step count of the AdamW state inside the optimizer's chain."""
    counts = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
              if "count" in jax.tree_util.keystr(path)]
    return max(np.asarray(c).max() for c in counts)


@pytest.mark.slow  # a whole run of the job
def test_grpo_starts_from_the_sft_checkpoint_or_an_hf_folder(trained, tiny_model, tok, tmp_path):
    sft_workdir, done, _ = trained
    sft_params = _host(done.model.params)
    assert not np.array_equal(_leaf(sft_params), _leaf(_host(tiny_model.params)))
    grpo = grpo_job.build_trainer(_grpo_config(sft_workdir), str(tmp_path / "grpo"), tok=tok)
    params, opt_state, step, _, _ = grpo._restore_or_init()
    assert step == 0  # a fresh run: the SFT run's step and optimizer state stay behind
    for a, b in zip(jax.tree.leaves(sft_params), jax.tree.leaves(_host(params))):
        np.testing.assert_array_equal(a, b)
    assert float(_adam_count(opt_state)) == 0

    hf_dir = tmp_path / "hf"
    done.model.save_hf(str(hf_dir), progress=False)
    from_hf = build.model(_grpo_config(hf_dir), tok)
    for a, b in zip(jax.tree.leaves(sft_params), jax.tree.leaves(_host(from_hf.params))):
        np.testing.assert_array_equal(a, b)

    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(build.ConfigFieldError, match=re.escape(f"config.init_from='{bad}'")):
            build.model(_grpo_config(bad), tok)


# ---- init_from a workdir whose newest step is corrupt --------------------------------------

def _tree_listing(root):
    """Every directory and file under root, with each file's size and modification time."""
    out = {}
    for d, dirs, names in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root)] = "dir"
        for name in names:
            st = os.stat(os.path.join(d, name))
            out[os.path.relpath(os.path.join(d, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


def _truncate_arrays(step_path):
    """Cut a step's array data files to half (a full disk, an interrupted copy): reading it
    fails in tensorstore with `ValueError: OUT_OF_RANGE`."""
    for root, _, names in os.walk(os.path.join(step_path, "params")):
        if os.path.basename(root) == "d":
            for name in names:
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)


def test_init_from_skips_a_corrupt_newest_step_and_leaves_the_workdir_untouched(tiny_model, tok, tmp_path, caplog):
    import optax
    workdir = str(tmp_path / "other_run")
    older = jax.tree.map(lambda a: np.asarray(a) + 1.0, tiny_model.params)
    newer = jax.tree.map(lambda a: np.asarray(a) + 2.0, tiny_model.params)
    with checkpoints.TrainCheckpointer(workdir, save_every=1, async_save=False) as ckpt:
        for step, params in ((1, older), (2, newer)):
            ckpt.save(step, params, optax.sgd(0.1).init(params), {}, tiny_model.config, tiny_model.hf_layout)
    steps = checkpoints.checkpoint_dir(workdir)
    _truncate_arrays(os.path.join(steps, "2"))
    before = _tree_listing(workdir)

    model = build.model(_grpo_config(workdir), tok)
    for a, b in zip(jax.tree.leaves(older), jax.tree.leaves(_host(model.params)), strict=True):
        np.testing.assert_array_equal(a, b)  # step 1's params, not a mix and not the random init
    assert f"checkpoint {os.path.join(steps, '2')} cannot be restored (ValueError: OUT_OF_RANGE" in caplog.text
    assert _tree_listing(workdir) == before  # another run's workdir: nothing moved, renamed or written

    _truncate_arrays(os.path.join(steps, "1"))
    before = _tree_listing(workdir)
    with pytest.raises(build.ConfigFieldError) as failed:
        build.model(_grpo_config(workdir), tok)
    message = str(failed.value)  # each step tried, and why it failed
    assert message.startswith(f"config.init_from='{workdir}': no checkpoint under {steps} can be restored")
    assert f"{os.path.join(steps, '2')}: ValueError: OUT_OF_RANGE" in message
    assert f"{os.path.join(steps, '1')}: ValueError: OUT_OF_RANGE" in message
    assert _tree_listing(workdir) == before


# ---- the jobs' HF export -------------------------------------------------------------------

def _assert_export_is(out_dir, params):
    from mmjax.models import qwen2_5_vl
    loaded = _host(qwen2_5_vl.load_hf(str(out_dir), progress=False).params)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a whole run of the job
def test_the_sft_job_writes_an_hf_export_and_a_resumed_run_replaces_it(tiny_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer
    def fresh(config, tok, mesh=None):  # this file's model, not a new random init
        return tiny_model.replace(params=jax.tree.map(jnp.copy, tiny_model.params))

    monkeypatch.setattr(build, "model", fresh)
    workdir = tmp_path / "w"
    workdir.mkdir()  # as mmjax.main makes it
    sft_job.run(_config(**{"sft.num_epochs": 2}), str(workdir))  # 2 steps
    out = workdir / "hf_export"

    def step(n):
        return os.path.join(checkpoints.checkpoint_dir(str(workdir)), n)

    _assert_export_is(out, checkpoints.restore_params(step("2")))  # the final checkpoint's params, exactly
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json"} <= set(os.listdir(out))
    tok = build.tokenizer(_config())
    assert AutoTokenizer.from_pretrained(str(out)).encode(QUESTION) == tok.encode(QUESTION)

    sft_job.run(_config(**{"sft.num_epochs": 3}), str(workdir))  # resumed at step 2: one more step
    final = checkpoints.restore_params(step("3"))
    assert not all(np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(final), jax.tree.leaves(checkpoints.restore_params(step("2")))))
    _assert_export_is(out, final)
    assert [n for n in os.listdir(workdir) if n.startswith("hf_export")] == ["hf_export"]  # nothing left beside


@pytest.mark.slow  # a whole run of the job
def test_the_grpo_job_writes_an_hf_export_of_its_trained_model(tiny_model, tmp_path, monkeypatch):
    trained_params = jax.tree.map(lambda a: a * 2, tiny_model.params)

    class Trainer:  # what run() uses of a trainer: train(), then the trained model
        model = tiny_model
        lora = None  # full fine-tuning: no adapters to export

        def train(self):
            self.model = tiny_model.replace(params=trained_params)
            return {"reward": 1.0}

    monkeypatch.setattr(grpo_job, "build_trainer", lambda config, workdir, tok=None: Trainer())
    assert grpo_job.run(_grpo_config(""), str(tmp_path)) == {"reward": 1.0}
    _assert_export_is(tmp_path / "hf_export", _host(trained_params))
    assert {"tokenizer.json", "preprocessor_config.json"} <= set(os.listdir(tmp_path / "hf_export"))
