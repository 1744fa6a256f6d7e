"""The one builder: from a recipe's ConfigDict to the objects a job runs (tokenizer, mesh, model,
data, rewards, the loop's and objectives' dataclasses). Below the jobs nothing reads the ConfigDict.

A field whose value is wrong raises `ConfigFieldError` naming `config.<field>` and what is
allowed; `mmjax.main` prints it as one line.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections

from mmjax import rewards as rewards_lib
from mmjax.data import batching, depth_jigsaw, jigsaw, pipeline, qa, sources, synthetic, video_jigsaw
from mmjax.data import sft as sft_data
from mmjax.data import adaptive_jigsaw
from mmjax.data.feedback import FeedbackChain
from mmjax.data.skips import SkipCounter
from mmjax.difficulty import cmab as cmab_lib
from mmjax.difficulty import pism as pism_lib
from mmjax.difficulty import scoring
from mmjax.difficulty import selection as selection_lib
from mmjax.difficulty import online_selection as online_selection_lib
from mmjax.difficulty import online_state
from mmjax.difficulty.score_file import ScoreFileError, read_scores
from mmjax.eval import benchmarks as bench_lib
from mmjax.eval import metrics as metrics_lib
from mmjax.eval import runner as runner_lib
from mmjax.eval import synthetic_benchmarks
from mmjax.jobs import preflight
from mmjax.models import lora as lora_lib
from mmjax.models import qwen2_5_vl
from mmjax.processing import ImageProcessorConfig, special_token_ids, tiny_tokenizer
from mmjax.rl.grpo import GRPOConfig
from mmjax.rl.objective import RolloutConfig
from mmjax.train.trainer import TrainConfig
from mmjax.train.optim import OptimizerConfig

# config.data.source: the synthetic sources read no path (QA rows: colour_choice, shapes_vqa;
# synthetic_video: moving-shape videos; synthetic_rgbd: RGB-D scenes), the others read data.path.
# These tuples are the allowed values of the config fields (mmjax.jobs.recipe's schema checks them).
SYNTHETIC_SOURCES = ("colour_choice", "shapes_vqa", "synthetic_video", "synthetic_rgbd")
SOURCES = SYNTHETIC_SOURCES + ("jsonl", "parquet", "image_folder", "video_folder", "rgbd_folder")
TASKS = ("qa", "jigsaw_image", "jigsaw_video", "jigsaw_3d")
# Tasks that read something only some sources give: the 3D jigsaw needs depth maps.
TASK_SOURCES = {"jigsaw_3d": ("rgbd_folder", "synthetic_rgbd")}
VIDEO_SECONDS, VIDEO_FPS = 24.0, 2.0  # synthetic_video: the shortest a video jigsaw takes (SPEC 1.2)
RGBD_INDEX = "index.jsonl"  # what mmjax.data.synthetic.write_rgbd_scenes writes: {"image", "depth"} rows
TOKENIZERS = ("tiny", "qwen2", "hf")
# config.eval.benchmarks.<name> = "synthetic": rows of the benchmark's format made from synthetic
# data (mmjax.eval.synthetic_benchmarks), config.eval.synthetic_rows of them; preflight accepts the
# value as a path.
SYNTHETIC_BENCHMARK = preflight.SYNTHETIC_BENCHMARK


class ConfigFieldError(ValueError):
    """A config field with a value the job cannot use."""


def dataclass_from(cls, node: ml_collections.ConfigDict | dict, field: str, **extra):
    """`cls(**node)` with errors naming config.<field>; unknown keys are refused."""
    values = dict(node.to_dict() if hasattr(node, "to_dict") else node)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigFieldError(f"config.{field} has unknown fields {unknown}; {cls.__name__} has {sorted(names)}")
    for key, value in values.items():  # ml_collections gives lists where the dataclass wants tuples
        if isinstance(value, list):
            values[key] = tuple(value)
    try:
        return cls(**values, **extra)
    except (TypeError, ValueError) as e:
        raise ConfigFieldError(f"config.{field}: {e}") from None


def tokenizer(config):
    kind = config.tokenizer
    if kind == "tiny":
        return tiny_tokenizer()
    if kind == "qwen2":
        from mmjax.processing import qwen2_tokenizer
        return qwen2_tokenizer()
    from transformers import AutoTokenizer
    if not config.model.hf_dir:
        raise ConfigFieldError("config.tokenizer='hf' needs config.model.hf_dir")
    return AutoTokenizer.from_pretrained(config.model.hf_dir)


def mesh(config):
    """The job's device mesh from config.mesh, or None for one device (every job builds it here, once)."""
    sizes = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    if -1 not in sizes and sizes[0] * sizes[1] * sizes[2] == 1:  # any axis may be -1: "all remaining devices"
        return None
    from mmjax import sharding
    return sharding.make_mesh(*sizes)


def model(config, tok, mesh=None):
    """The model: config.init_from's weights, an HF folder, or a random preset whose special
    ids follow the tokenizer; its params placed on `mesh` (build.mesh) when given."""
    m = config.model
    options = dict(attention=m.attention, remat=m.remat, vision_remat=m.vision_remat)
    if config.get("init_from", ""):
        built = _init_from(config.init_from, m, tok, options, mesh)
    elif m.hf_dir:  # each tensor straight into its shards: no whole copy on one device
        built = qwen2_5_vl.load_hf(m.hf_dir, dtype=m.dtype, compute_dtype=m.compute_dtype or None, mesh=mesh,
                                   **options)
    else:
        ids = special_token_ids(tok)
        cfg = qwen2_5_vl.preset(m.preset)
        cfg = cfg.replace(
            image_token_id=ids.image_token_id, video_token_id=ids.video_token_id,
            vision_start_token_id=ids.vision_start_token_id, vision_end_token_id=ids.vision_end_token_id,
            text=dataclasses.replace(cfg.text, vocab_size=len(tok), eos_token_id=ids.eos_token_ids[0],
                                     pad_token_id=ids.pad_token_id))
        built = qwen2_5_vl.Qwen2_5_VL.from_config(cfg, seed=config.seed, dtype=m.dtype,
                                                  compute_dtype=m.compute_dtype or None, **options)
    return place(built, mesh)


def place(model, mesh):
    """A model built elsewhere (a test's), placed on the job's mesh as build.model places its own."""
    return model.shard(mesh) if mesh is not None and model.mesh is None else model


def _init_from(path: str, m, tok, options, mesh=None):
    """The model of config.init_from: a training workdir (params of its newest step that
    restores; a newer unreadable one is skipped with a warning naming it, and left in place:
    that workdir is another run's), one checkpoint directory (a step of one, or
    `save_model`'s), or an HF folder. Params only: the job's optimizer starts fresh. The
    architecture is the checkpoint's own."""
    import jax.numpy as jnp
    from mmjax.train import checkpoints
    dtype, compute = m.dtype, m.compute_dtype or None
    what = ("expected a training workdir (with checkpoints/), a checkpoint directory or an HF folder "
            "(config.json + *.safetensors)")
    if not os.path.isdir(path):
        raise ConfigFieldError(f"config.init_from={path!r}: no such directory; {what}")
    runs = checkpoints.checkpoint_dir(path)
    hf_folder = os.path.isfile(os.path.join(path, "config.json")) and any(
        name.endswith((".safetensors", ".safetensors.index.json")) for name in os.listdir(path))
    if hf_folder and not os.path.isdir(runs):  # a workdir has a config.json too: the run's own config
        model = qwen2_5_vl.load_hf(path, dtype=dtype, compute_dtype=compute, mesh=mesh, **options)
    else:
        if os.path.isdir(runs):
            try:  # newest first, as a resumed run does; moves nothing aside
                found = checkpoints.restore_newest(runs, checkpoints.restore_model)
            except qwen2_5_vl.CheckpointError as e:  # every step failed: e lists each one and why
                raise ConfigFieldError(f"config.init_from={path!r}: {e}") from None
            if found is None:
                raise ConfigFieldError(f"config.init_from={path!r}: {runs} holds no finished checkpoint")
            ckpt = found[1]
        else:
            try:
                ckpt = checkpoints.restore_model(path)
            except (qwen2_5_vl.CheckpointError, FileNotFoundError) as e:
                raise ConfigFieldError(f"config.init_from={path!r}: {e}; {what}") from None
            except Exception as e:  # noqa: BLE001  a damaged array file (tensorstore's ValueError, ...)
                raise ConfigFieldError(f"config.init_from={path!r}: cannot be restored "
                                       f"({type(e).__name__}: {str(e)[:300]})") from None
        if lora_lib.adapters(ckpt.params) and "embed_tokens" not in ckpt.params.get("language_model", {}):
            raise ConfigFieldError(
                f"config.init_from={path!r}: a LoRA run's checkpoint holds its adapters only (issue 25); start "
                f"from the run's merged model instead (its workdir's {checkpoints.HF_EXPORT} folder)")
        params = jax.device_put(jax.tree.map(lambda a: a.astype(jnp.dtype(dtype)), ckpt.params))
        model = qwen2_5_vl.Qwen2_5_VL(ckpt.config, params, compute or dtype, hf_layout=ckpt.hf_layout, **options)
    ids, cfg = special_token_ids(tok), model.config
    if cfg.image_token_id != ids.image_token_id or cfg.text.vocab_size < len(tok):
        raise ConfigFieldError(f"config.init_from={path!r}: the model (vocabulary {cfg.text.vocab_size}, image "
                               f"token {cfg.image_token_id}) does not fit the tokenizer of config.tokenizer "
                               f"({len(tok)} tokens, image token {ids.image_token_id})")
    return model


def image_config(config) -> ImageProcessorConfig:
    return ImageProcessorConfig(min_pixels=config.data.min_pixels, max_pixels=config.data.max_pixels)


def source(data, seed_offset: int = 0):
    kind = data.source
    if kind == "colour_choice":
        return synthetic.ColourChoiceSource(data.num_samples, seed=data.seed + seed_offset,
                                            size=tuple(data.image_size), graded=data.get("colour_graded", False))
    if kind == "shapes_vqa":
        return synthetic.ShapesVqaSource(data.num_samples, seed=data.seed + seed_offset,
                                         size=tuple(data.image_size), background="photos")
    if kind == "synthetic_rgbd":
        return synthetic.SyntheticRgbdSource(data.num_samples, seed=data.seed + seed_offset,
                                             size=tuple(data.image_size))
    if kind == "synthetic_video":
        return sources.VideoFolderSource(_synthetic_videos(data.num_samples, data.seed + seed_offset,
                                                           tuple(data.image_size)))
    if not data.path:
        raise ConfigFieldError(f"config.data.source={kind!r} needs config.data.path")
    if kind == "jsonl":
        return sources.JsonlSource(data.path, data_root=data.data_root or None, strict=data.strict)
    if kind == "parquet":
        return sources.ParquetSource(data.path, data_root=data.data_root or None, strict=data.strict)
    return _folder_source(kind, data)


def selected_source(data, seed_offset: int = 0):
    """source(), narrowed to the rows config.data.selection picks when it names a score file (SPEC 2)."""
    src = source(data, seed_offset)
    if "selection" not in data:
        return src
    chosen = dataclass_from(selection_lib.SelectionConfig, data.selection, "data.selection")
    try:
        return selection_lib.apply(src, chosen)
    except (selection_lib.SelectionError, ScoreFileError) as e:
        raise ConfigFieldError(f"config.data.selection: {e}") from None


def _folder_source(kind: str, data):
    """image_folder / video_folder: every such file under data.path; rgbd_folder: an RGB-D index."""
    path = data.path
    if kind == "rgbd_folder" and os.path.isdir(path):
        path = os.path.join(path, RGBD_INDEX)
    elif kind != "rgbd_folder" and not os.path.isdir(path):
        raise ConfigFieldError(f"config.data.source={kind!r} needs config.data.path to be a folder; "
                               f"{path!r} is not one")
    try:
        if kind == "image_folder":
            return sources.ImageFolderSource(path, strict=data.strict)
        if kind == "video_folder":
            return sources.VideoFolderSource(path)
        return sources.RgbdSource.from_jsonl(path, data_root=data.data_root or None, strict=data.strict)
    except FileNotFoundError as e:
        what = f"no {RGBD_INDEX} of {{'image', 'depth'}} rows" if kind == "rgbd_folder" else "nothing to read"
        raise ConfigFieldError(f"config.data.path={data.path!r} (data.source={kind!r}): {what}: {e}") from None
    except ValueError as e:  # a broken RGB-D index line
        raise ConfigFieldError(f"config.data.path={data.path!r} (data.source={kind!r}): {e}") from None


def _synthetic_videos(num: int, seed: int, size: tuple[int, int]) -> str:
    """A folder of `num` moving-shape videos (mmjax.data.synthetic), written once per (num, seed,
    size) under the temp dir and reused: the video jigsaw reads video files."""
    import shutil
    import tempfile
    root = os.path.join(tempfile.gettempdir(), "mmjax_synthetic")
    folder = os.path.join(root, f"videos_n{num}_seed{seed}_{size[0]}x{size[1]}")
    if os.path.isdir(folder):
        return folder
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix=".videos_")
    for i in range(num):
        synthetic.write_moving_shapes_video(os.path.join(tmp, f"{i:05d}.mp4"), VIDEO_SECONDS, VIDEO_FPS, size,
                                            seed=seed * 1_000_003 + i)
    try:
        os.rename(tmp, folder)  # whole or not at all; another process may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def transforms(data, tok, model) -> list:
    task = data.task
    if task in TASK_SOURCES and data.source not in TASK_SOURCES[task]:
        raise ConfigFieldError(f"config.data.task={task!r} needs config.data.source in {list(TASK_SOURCES[task])}, "
                               f"got {data.source!r}")
    first = _task(task, data)
    image_cfg = ImageProcessorConfig(min_pixels=data.min_pixels, max_pixels=data.max_pixels)
    spec = model.config.input_spec(min_vision_rows=data.min_vision_rows, max_pixels=data.max_pixels)
    process = batching.ProcessSample(tok, image_cfg=image_cfg, max_prompt_length=data.max_prompt_length or None,
                                     tokens_per_second=model.config.vision.tokens_per_second,
                                     frame_patches=spec.frame_patches)
    return [first, process]


def _task(task: str, data):
    """The task transform of config.data.task (SPEC 1.1-1.3 for the jigsaws, SPEC 2.3 for qa)."""
    common = dict(container=data.container, seed=data.seed, strict=data.strict)
    try:
        if task == "qa":
            return qa.QaSample(container=data.container, system_prompt=data.system_prompt, strict=data.strict,
                               layout=data.prompt_layout)
        if task == "jigsaw_image":
            return jigsaw.ImageJigsaw(rows=data.jigsaw_rows, cols=data.jigsaw_cols, **common)
        pieces = {"jigsaw_video": "video_clips", "jigsaw_3d": "jigsaw_points"}.get(task)
        if pieces and data[pieces] < 2:
            raise ValueError(f"{pieces}={data[pieces]}: a jigsaw needs at least 2 pieces")
        if task == "jigsaw_video":
            # plan_clips checks trim and the frame clamp once, here, rather than on every video.
            video_jigsaw.plan_clips(10**6, 30.0, data.video_clips, data.video_trim, data.video_sample_fps,
                                    data.video_min_frames, data.video_max_frames)
            return video_jigsaw.VideoJigsaw(
                num_clips=data.video_clips, trim=data.video_trim, sample_fps=data.video_sample_fps,
                min_frames=data.video_min_frames, max_frames=data.video_max_frames,
                min_seconds=data.video_min_seconds, frame_pixels=data.video_frame_pixels, **common)
        return depth_jigsaw.DepthJigsaw(num_points=data.jigsaw_points, **common)
    except ValueError as e:
        raise ConfigFieldError(f"config.data (task {task!r}): {e}") from None


def online_selection(config, data_source) -> online_selection_lib.OnlineSelection:
    """config.data.online over the rows the pipeline reads (after the offline selection), seeded
    from the selection's score file when online.seed_from_scores (SPEC 2.1's pass rate at ratio 0,
    else the PISM level)."""
    online = dataclass_from(online_state.OnlineConfig, config.data.online, "data.online")
    seeds = {}
    if online.seed_from_scores:
        score_file = config.data.selection.score_file if "selection" in config.data else ""
        if not score_file or not hasattr(data_source, "source_rows"):
            raise ConfigFieldError("config.data.online.seed_from_scores needs config.data.selection.score_file "
                                   "(the scores to seed from)")
        rates, levels = online_state.seeds_from_records(read_scores(score_file), len(data_source.source))
        seeds = dict(seed_pass_rates=rates[data_source.source_rows], seed_levels=levels[data_source.source_rows])
    return online_selection_lib.OnlineSelection(online, len(data_source), config.data.seed, **seeds)


def grpo_dataset(config, tok, model, data_source):
    """(dataset, feedback) of a GRPO run: the pipeline with its feedback stages, online difficulty
    (always: it logs the rows' levels; config.data.online) and, for a jigsaw task with
    config.data.adaptive.enabled, the adaptive size, whose puzzles are then built in the main
    process as batches draw them (the workers only read rows)."""
    feedback = online_selection(config, data_source)
    data = config.data
    if not data.adaptive.enabled:
        return dataset(config, tok, model, data_source=data_source, feedback=feedback), feedback
    if data.task not in adaptive_jigsaw.LEVELS:
        raise ConfigFieldError(f"config.data.adaptive.enabled needs a jigsaw task; config.data.task={data.task!r}")
    adaptive_cfg = dataclass_from(adaptive_jigsaw.AdaptiveConfig, data.adaptive, "data.adaptive")
    first, process = transforms(data, tok, model)
    counter = SkipCounter()  # the pipeline's: the skips of the main-process puzzles are counted with the rest
    try:
        adaptive = adaptive_jigsaw.AdaptiveJigsaw.from_task_transform(adaptive_cfg, data.task, first, then=[process],
                                                                      counter=counter, strict=data.strict)
    except ValueError as e:
        raise ConfigFieldError(f"config.data.adaptive: {e}") from None
    feedback = FeedbackChain(feedback, adaptive)  # a record online selection passes over is never built
    return dataset(config, tok, model, data_source=data_source, feedback=feedback, worker_transforms=[],
                   counter=counter), feedback


def dataset(config, tok, model, *, seed_offset: int = 0, batch_size: int | None = None, num_epochs=None,
            shuffle: bool = True, data_source=None, feedback=None, worker_transforms=None, counter=None):
    """The grain dataset of model batches for this recipe (seed_offset: a held-out split).

    data_source: the rows to read, default selected_source(config.data, seed_offset).
    feedback: a main-process stage the training step updates (`grpo_dataset`), or None.
    worker_transforms: what the workers run (default: the task transform and the processor).
    counter: the pipeline's skip counter (default: a new one).
    """
    data = config.data
    spec = model.config.input_spec(min_vision_rows=data.min_vision_rows, max_pixels=data.max_pixels)
    batcher = batching.Batcher(pad_id=special_token_ids(tok).pad_token_id, spec=spec,
                               bucket_lengths=tuple(data.bucket_lengths) or None)
    pipe = pipeline.PipelineConfig(seed=data.seed + seed_offset, batch_size=batch_size or data.batch_size,
                                   worker_count=data.worker_count, num_epochs=num_epochs, shuffle=shuffle,
                                   strict=data.strict)
    if data_source is None:
        data_source = selected_source(data, seed_offset)
    steps = transforms(data, tok, model) if worker_transforms is None else worker_transforms
    return pipeline.build_dataset(data_source, steps, pipe, batch_fn=batcher, feedback=feedback, counter=counter)


def reward(config) -> rewards_lib.CombinedReward:
    weights = dict(config.rewards.weights)
    options = {k: dict(v) for k, v in config.rewards.options.items()} if "options" in config.rewards else {}
    try:
        return rewards_lib.combine(weights, options)
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigFieldError(f"config.rewards: {e}") from None


def allowed_token_ids(config, tok) -> tuple[int, ...] | None:
    """Token ids of `config.sample.allowed_tokens` (each string must be one token) + EOS."""
    strings = list(config.sample.allowed_tokens)
    if not strings:
        return None
    ids = []
    for text in strings:
        enc = tok.encode(text, add_special_tokens=False)
        if len(enc) != 1:
            raise ConfigFieldError(f"config.sample.allowed_tokens: {text!r} is {len(enc)} tokens, not one")
        ids.append(enc[0])
    if config.sample.allow_eos:
        ids += list(special_token_ids(tok).eos_token_ids)
    return tuple(sorted(set(ids)))


def frozen_dtype(config):
    """config.model.frozen_dtype as a dtype, None when the frozen params keep the model's."""
    name = config.model.get("frozen_dtype", "")
    return None if not name or name == config.model.dtype else jax.numpy.dtype(name)


def grpo_config(config) -> GRPOConfig:
    return dataclass_from(GRPOConfig, config.grpo, "grpo")


def optimizer_config(config, total_steps: int | None = None) -> OptimizerConfig:
    """config.optim; its schedule spans total_steps (default config.max_steps; SFT: its epochs' steps)."""
    node = dict(config.optim)
    node.setdefault("total_steps", config.max_steps if total_steps is None else total_steps)
    return dataclass_from(OptimizerConfig, node, "optim")


def lora_spec(config) -> lora_lib.LoraSpec | None:
    """config.lora as a LoraSpec (mmjax.models.lora); None when lora.rank is 0 (full fine-tuning)."""
    spec = dataclass_from(lora_lib.LoraSpec, dict(config.get("lora", {})), "lora")
    return spec if spec.enabled else None


def lora(config, model) -> dict:
    """LoRA from config.lora, as the Trainer's keyword arguments: {} when lora.rank is 0 (full
    fine-tuning), else the spec and new adapters (A from config.seed, B zeros)."""
    spec = lora_spec(config)
    if spec is None:
        return {}
    adapters = lora_lib.init_adapters(model.module, spec, jax.random.fold_in(jax.random.key(config.seed), 0x10A))
    return {"lora": spec, "adapters": adapters}


def export_adapters(trainer, config, workdir: str) -> str | None:
    """A LoRA run's trained adapters as a PEFT folder, <workdir>/peft_adapter (process 0); None without LoRA."""
    if trainer.lora is None:
        return None
    out = os.path.join(workdir, lora_lib.PEFT_EXPORT)
    if jax.process_index() == 0:
        lora_lib.save_peft(out, trainer.adapters, trainer.lora, base_model=config.model.hf_dir or config.init_from)
    return out


def train_config(config, max_steps: int | None = None) -> TrainConfig:
    """The loop's settings; max_steps: the run's length when the job computes it (SFT's epochs)."""
    return dataclass_from(TrainConfig, dict(
        max_steps=config.max_steps if max_steps is None else max_steps, save_steps=config.save_steps,
        logging_steps=config.logging_steps, save_total_limit=config.save_total_limit,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        async_checkpoint=config.async_checkpoint), "train")


def rollout_config(config, tok) -> RolloutConfig:
    return dataclass_from(RolloutConfig, dict(
        seed=config.seed, filter_zero_std_groups=config.filter_zero_std_groups,
        filter_max_retries=config.filter_max_retries, allowed_token_ids=allowed_token_ids(config, tok)), "rollout")


def write_resolved_config(config, workdir: str) -> str:
    """workdir/config.json: the run's config after every override (what this run really used)."""
    path = os.path.join(workdir, "config.json")
    if jax.process_index() != 0:  # every process holds the same config; one writer, no torn file
        return path
    with open(path, "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f, indent=2, sort_keys=True)
    return path


def eos_and_pad(tok) -> tuple[tuple[int, ...], int]:
    ids = special_token_ids(tok)
    return tuple(ids.eos_token_ids), int(ids.pad_token_id)




# ---- mode=sft -------------------------------------------------------------------------------

def sft_dataset(config, tok, model, source=None):
    """The grain dataset of SFT batches (prompt batch + targets / target_mask) for this recipe."""
    data, sft = config.data, config.sft
    ids = special_token_ids(tok)
    spec = model.config.input_spec(min_vision_rows=data.min_vision_rows, max_pixels=data.max_pixels)
    prompts = batching.Batcher(pad_id=ids.pad_token_id, spec=spec, bucket_lengths=tuple(data.bucket_lengths) or None)
    batcher = sft_data.SftBatcher(prompts, pad_id=ids.pad_token_id, bucket_lengths=tuple(sft.bucket_lengths) or None)
    try:
        answers = sft_data.AnswerTokens(tok, eos_token_id=ids.eos_token_ids[0], answer_format=sft.answer_format,
                                        max_answer_length=sft.max_answer_length or None, strict=data.strict)
    except ValueError as e:
        raise ConfigFieldError(f"config.sft: {e}") from None
    pipe = pipeline.PipelineConfig(seed=data.seed, batch_size=data.batch_size, worker_count=data.worker_count,
                                   num_epochs=sft.num_epochs or None, strict=data.strict)
    source = source if source is not None else selected_source(data)
    return pipeline.build_dataset(source, transforms(data, tok, model) + [answers], pipe, batch_fn=batcher)


def sft_steps(config, num_rows: int) -> int:
    """Optimizer steps of the run: num_epochs passes over num_rows (batches run across epoch
    boundaries, as the pipeline makes them), cut at max_steps when that is > 0."""
    epochs, limit = config.sft.num_epochs, config.max_steps
    if epochs <= 0 and limit <= 0:
        raise ConfigFieldError("config.sft.num_epochs and config.max_steps are both <= 0: the run has no end")
    if epochs <= 0:
        return limit
    per_process = num_rows // jax.process_count()
    steps = epochs * per_process // config.data.batch_size // config.gradient_accumulation_steps
    if steps < 1:
        raise ConfigFieldError(
            f"config.data ({num_rows} rows, {jax.process_count()} processes) fills no step of "
            f"data.batch_size={config.data.batch_size} x gradient_accumulation_steps="
            f"{config.gradient_accumulation_steps} in sft.num_epochs={epochs}")
    return min(steps, limit) if limit > 0 else steps


# ---- mode=score -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScoreJobOptions:
    """config.score's fields for the job itself (mmjax.jobs.score), beside ScoreConfig's."""
    write_jsonl: bool = False  # scores.jsonl beside scores.parquet
    max_batches: int = 0       # stop after this many batches (0 = the whole dataset); a rerun resumes
    progress: bool = True      # a tqdm bar over the rows


def score_configs(config) -> tuple[scoring.ScoreConfig, pism_lib.PismLevels, cmab_lib.CmabConfig, ScoreJobOptions]:
    """The `score` section as its dataclasses; a bad field raises ConfigFieldError naming it."""
    if "score" not in config:
        raise ConfigFieldError("config.score is missing: mode=score needs a score section "
                               "(configs/difficulty_score.py)")
    node = config.score.to_dict()
    job = {f.name: node.pop(f.name) for f in dataclasses.fields(ScoreJobOptions) if f.name in node}
    pism_node = node.pop("pism", {})
    cmab_node = node.pop("cmab", {})
    if not cmab_node.get("target_mix"):
        cmab_node["target_mix"] = None  # () in a recipe: fixed thresholds need none
    score = dataclass_from(scoring.ScoreConfig, node, "score")
    levels = dataclass_from(pism_lib.PismLevels, pism_node, "score.pism")
    cmab = dataclass_from(cmab_lib.CmabConfig, cmab_node, "score.cmab")
    return score, levels, cmab, dataclass_from(ScoreJobOptions, job, "score")


# ---- mode=eval ------------------------------------------------------------------------------

def eval_benchmark_files(config) -> dict[str, str]:
    """Benchmark name -> file, for every name given a path (an empty path = not run); a path of
    SYNTHETIC_BENCHMARK is a small file of the benchmark's format written from synthetic data."""
    named = {name: str(path) for name, path in config.eval.benchmarks.items() if path}
    if not named:
        raise ConfigFieldError(
            f"config.eval.benchmarks: no benchmark file given; set one of {sorted(config.eval.benchmarks)}, e.g. "
            "--config.eval.benchmarks.mmstar=/data/mmstar.jsonl")
    for name, path in named.items():
        try:
            fmt = bench_lib.format_of(name)
        except bench_lib.BenchmarkError as e:
            raise ConfigFieldError(f"config.eval.benchmarks.{name}: {e}") from None
        if path == SYNTHETIC_BENCHMARK:
            named[name] = _synthetic_benchmark(name, fmt, config.eval.seed, config.eval.synthetic_rows)
    return named


def _synthetic_benchmark(name: str, fmt: str, seed: int, rows: int) -> str:
    """The file of `rows` synthetic rows of `fmt` (mmjax.eval.synthetic_benchmarks), written once
    per (format, rows, seed) under the temp dir and reused."""
    if fmt not in synthetic_benchmarks.FORMATS:
        raise ConfigFieldError(f"config.eval.benchmarks.{name}={SYNTHETIC_BENCHMARK!r}: format {fmt!r} has no "
                               f"synthetic rows; the formats that do: {list(synthetic_benchmarks.FORMATS)}")
    return synthetic_benchmarks.cached_benchmark(fmt, rows, seed)


def eval_read_options(config) -> bench_lib.ReadOptions:
    e = config.eval
    return bench_lib.ReadOptions(data_root=e.data_root or None, jigsaw_rows=e.jigsaw_rows, jigsaw_cols=e.jigsaw_cols,
                                 seed=e.seed, container=e.container, limit=e.limit)


def eval_score_options(config) -> metrics_lib.ScoreOptions:
    e = config.eval
    return metrics_lib.ScoreOptions(container=e.container, math_timeout_seconds=e.math_timeout_seconds,
                                    math_workers=e.math_workers, ocr_min_ratio=e.ocr_min_ratio,
                                    ocr_allow_substring=e.ocr_allow_substring, jigsaw_think=e.jigsaw_think)


def eval_runner_config(config) -> runner_lib.RunnerConfig:
    e, d = config.eval, config.data
    try:
        return runner_lib.RunnerConfig(batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                                       temperature=e.temperature, top_p=e.top_p, seed=e.seed,
                                       min_vision_rows=d.min_vision_rows,
                                       bucket_lengths=tuple(d.bucket_lengths) or None, progress=e.progress)
    except ValueError as err:
        raise ConfigFieldError(f"config.eval: {err}") from None


def eval_read_all(config) -> dict[str, list[bench_lib.Item]]:
    """Every benchmark's checked items; the first bad file or row raises ConfigFieldError naming it."""
    opts, out = eval_read_options(config), {}
    for name, path in eval_benchmark_files(config).items():
        synthetic_file = config.eval.benchmarks[name] == SYNTHETIC_BENCHMARK  # its images sit beside it
        try:
            out[name] = bench_lib.read_benchmark(
                name, path, dataclasses.replace(opts, data_root=None) if synthetic_file else opts)
        except bench_lib.BenchmarkError as e:
            raise ConfigFieldError(f"config.eval.benchmarks.{name}: {e}") from None
    return out


def eval_model(config, tok):
    """The model to evaluate: config.init_from's weights if set, else model.hf_dir / the preset,
    on config.mesh's devices."""
    return model(config, tok, mesh(config))  # init_from: a workdir, a checkpoint or an HF folder
