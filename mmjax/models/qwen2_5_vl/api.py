"""`Qwen2_5_VL`: the model as users hold it, config + params, with the user-facing entry points."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import sharding
from mmjax.models import sampler
from mmjax.models.qwen2_5_vl import hf, hf_keys, logprobs
from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl.model import Qwen25VLModule
from mmjax.models.qwen2_5_vl.params import init_params
from mmjax.processing.model_inputs import check_attention_mask, check_token_id_arg, check_token_ids, model_batch

# Files of an HF model folder that belong to the tokenizer / processor, copied on export.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
              "special_tokens_map.json", "added_tokens.json", "chat_template.json",
              "chat_template.jinja", "preprocessor_config.json", "video_preprocessor_config.json",
              "processor_config.json", "generation_config.json")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _as_dtype(dtype):
    return _DTYPES[dtype] if isinstance(dtype, str) else dtype


_completion_logprobs = jax.jit(logprobs.completion_logprobs, static_argnums=(0,),
                               static_argnames=("num_generations", "temperature", "with_entropy", "chunk_rows"))


@functools.partial(jax.jit, static_argnums=(0,))
def _forward(module: Qwen25VLModule, params, input_ids, positions, attention_mask, image, video):
    return module.apply({"params": params}, input_ids, positions, attention_mask, image=image, video=video)


class Qwen2_5_VL:
    """A facade over the pure functions: config + params + how to run them.

    params: a plain nested dict of arrays (Flax layout), stored in their own dtype (float32
    master weights for training, bfloat16 for inference, ...). dtype: the compute dtype.
    attention: a `mmjax.models.attention.IMPLEMENTATIONS` name, "auto" by default (per backend
    and shape: blockwise for long CPU prefill, cuDNN / splash on GPU / TPU, explicit for decode
    steps and capture), as the recipes' `model.attention`; remat / vision_remat: a
    `mmjax.models.remat.REMAT_POLICIES` name. Methods never mutate the model: `shard` and
    `replace` return a new one.
    """

    def __init__(self, config: Qwen25VLConfig, params, dtype=None, hf_layout: str = hf_keys.HUB_LAYOUT,
                 source_dir: str | None = None, *, attention: str = "auto", remat: str = "none",
                 vision_remat: str = "none", mesh=None):
        self.config = config
        self.params = params
        leaves = jax.tree.leaves(params)
        self.param_dtype = jnp.dtype(leaves[0].dtype) if leaves else jnp.dtype(jnp.float32)
        self.dtype = jnp.dtype(_as_dtype(dtype)) if dtype is not None else self.param_dtype
        self.hf_layout = hf_layout
        self.source_dir = source_dir
        self.options = dict(attention=attention, remat=remat, vision_remat=vision_remat)
        self.module = Qwen25VLModule(config, dtype=self.dtype, param_dtype=self.param_dtype, **self.options)
        self.mesh = mesh

    def replace(self, **changes) -> "Qwen2_5_VL":
        """A new model with some of (params, dtype, attention, remat, vision_remat, mesh) changed."""
        kw = dict(params=self.params, dtype=self.dtype, hf_layout=self.hf_layout, source_dir=self.source_dir,
                  mesh=self.mesh, **self.options)
        unknown = set(changes) - set(kw)
        if unknown:
            raise TypeError(f"Qwen2_5_VL.replace: unknown fields {sorted(unknown)}; allowed {sorted(kw)}")
        kw.update(changes)
        return Qwen2_5_VL(self.config, kw.pop("params"), **kw)

    def shard(self, mesh, rules=None) -> "Qwen2_5_VL":
        """A model whose params are placed on `mesh` by their logical axes (calls run sharded)."""
        from mmjax import sharding
        from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
        rules = rules or sharding.DEFAULT_RULES
        shardings = sharding.param_shardings(abstract_params(self.config), logical_axes(self.config), mesh, rules)
        return self.replace(params=jax.tree.map(_onto, self.params, shardings), mesh=mesh)

    @classmethod
    def from_config(cls, config: Qwen25VLConfig, seed: int = 0, dtype=jnp.float32, *, compute_dtype=None,
                    **options) -> "Qwen2_5_VL":
        """Random params stored in `dtype`, computing in `compute_dtype` (default: the same)."""
        return cls(config, init_params(config, seed, _as_dtype(dtype)), compute_dtype or dtype, **options)

    # ---- inference ----------------------------------------------------------------------

    def prepare(self, input_ids, attention_mask, pixel_values=None, image_grid_thw=None, *,
                pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None):
        """The checked model batch (`mmjax.processing.model_batch`, the pipeline's function too)."""
        return model_batch(self.config.input_spec(), input_ids, attention_mask, pixel_values=pixel_values,
                           image_grid_thw=image_grid_thw, pixel_values_videos=pixel_values_videos,
                           video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts)

    def logits(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None, *,
               pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None) -> np.ndarray:
        """Full-sequence logits [B, T, V] (float32 numpy)."""
        x = self.prepare(input_ids, attention_mask, pixel_values, image_grid_thw,
                         pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                         second_per_grid_ts=second_per_grid_ts)
        ids, positions, mask = x["input_ids"], x["positions"], x["attention_mask"]
        if self.mesh is not None:
            ids, mask = (jax.device_put(a, sharding.batch_sharding(self.mesh, a.shape)) for a in (ids, mask))
            positions = jax.device_put(positions, sharding.batch_sharding(self.mesh, positions.shape, batch_axis=1))
        with self._activation_rules():
            out = _forward(self.module, self.params, ids, positions, mask, x["image"], x["video"])
        return np.asarray(out, np.float32)

    def _activation_rules(self):
        """The models' activation sharding constraints bind to this model's mesh (if any)."""
        return sharding.activation_rules(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def generate(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None, *,
                 max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 num_generations: int = 1, seed: int = 0, eos_token_ids=None, pad_token_id=None,
                 allowed_token_ids=None, capture=None, prefill_chunk: int = sampler.PREFILL_CHUNK,
                 pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None, row_seeds=None,
                 bucket_lengths=None):
        """Sample completions of left-padded prompts: a `mmjax.models.sampler.Rollout` (numpy).

        temperature 0 is greedy. Rows are prompt-major (row n = prompt n // num_generations);
        row_seeds (one int per row) key each row's samples by the caller's id for it.
        eos_token_ids / pad_token_id default to the config's. capture="cmab" also returns the
        per-layer, per-head attention masses of each generated token on image / text keys.
        bucket_lengths: the prompt-length buckets to pad to (as the pipeline's); None uses
        `mmjax.processing.buckets`' rule.
        """
        t = self.config.text
        eos = t.eos_token_id if eos_token_ids is None else eos_token_ids
        if eos is not None:  # before as_token_ids, whose int() would truncate 1.5 to 1
            check_token_id_arg("eos_token_ids", eos, t.vocab_size,
                               " (the config's text_config.eos_token_id)" if eos_token_ids is None else "")
        eos_ids = sampler.as_token_ids(eos)
        note = ""
        if pad_token_id is None:
            pad_token_id = t.pad_token_id if t.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
            note = " (the config's text_config.pad_token_id)" if t.pad_token_id is not None else ""
        check_token_id_arg("pad_token_id", pad_token_id, t.vocab_size, note, single=True)
        batch = self.prepare(input_ids, attention_mask, pixel_values, image_grid_thw,
                             pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                             second_per_grid_ts=second_per_grid_ts)
        with self._activation_rules():
            return sampler.generate(
                self.module, self.params, batch, max_new_tokens=max_new_tokens,
                sampling=sampler.SamplingParams(float(temperature), float(top_p), int(top_k)),
                num_generations=num_generations, seed=seed, eos_token_ids=eos_ids, pad_token_id=pad_token_id,
                allowed_token_ids=allowed_token_ids, capture=capture, prefill_chunk=prefill_chunk, mesh=self.mesh,
                row_seeds=row_seeds, bucket_lengths=bucket_lengths)

    def completion_logprobs(self, input_ids, attention_mask, completions, completion_mask,
                            pixel_values=None, image_grid_thw=None, *, num_generations: int = 1,
                            temperature: float = 1.0, with_entropy: bool = False, pixel_values_videos=None,
                            video_grid_thw=None, second_per_grid_ts=None):
        """float32 numpy log-probs [N, Tc] of completions of left-padded prompts (row n continues
        prompt n // num_generations), and entropy [N, Tc] when asked (else None)."""
        batch = self.prepare(input_ids, attention_mask, pixel_values, image_grid_thw,
                             pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                             second_per_grid_ts=second_per_grid_ts)
        comp = check_token_ids(completions, self.config.text.vocab_size, "completions")
        mask = check_attention_mask(completion_mask, comp.shape, "completion_mask").astype(bool)
        with self._activation_rules():
            lp, ent = _completion_logprobs(self.module, self.params, batch, comp.astype(np.int32), mask,
                                           num_generations=num_generations, temperature=float(temperature),
                                           with_entropy=with_entropy)
        return np.asarray(lp), (None if ent is None else np.asarray(ent))

    # ---- Hugging Face ------------------------------------------------------------------

    def save_hf(self, out_dir: str, max_shard_size: int | str = "5GB", progress: bool = True) -> None:
        """Write an HF folder: safetensors (sharded above max_shard_size), config, generation config,
        and the tokenizer / processor files of the folder this model was loaded from.

        out_dir is replaced as a whole: the new folder is built beside it and renamed into
        place, so no shard or index of an older export survives and a killed save leaves the
        old export intact. out_dir may be absent, empty or an earlier HF export (only
        safetensors, index, config.json, generation_config.json and SIDE_FILES); a folder
        holding anything else (a README, a subfolder) is refused with FileExistsError naming
        those files, since replacing it would delete them. Saving into the folder the model
        was loaded from is fine: its tokenizer / processor files are carried over.
        """
        def write(tmp: str) -> None:
            hf.save_safetensors(hf.iter_params_as_hf(self.params, self.config, self.hf_layout), tmp,
                                max_shard_size, progress)
            self.config.save(tmp)
            if "generation_config.json" not in copy_side_files(self.source_dir, tmp):
                hf.write_generation_config(self.config, tmp)

        hf.replace_folder(out_dir, write, SIDE_FILES)


def copy_side_files(src_dir: str | None, out_dir: str) -> list[str]:
    """Copy the SIDE_FILES present in src_dir to out_dir; returns the names copied."""
    copied = []
    if src_dir and os.path.abspath(src_dir) != os.path.abspath(out_dir):
        for name in SIDE_FILES:
            if os.path.exists(os.path.join(src_dir, name)):
                shutil.copy2(os.path.join(src_dir, name), os.path.join(out_dir, name))
                copied.append(name)
    return copied


def load_hf(hf_dir: str, dtype=None, progress: bool = True, *, compute_dtype=None, mesh=None, rules=None,
            **options) -> Qwen2_5_VL:
    """Load an HF Qwen2.5-VL folder with params stored in `dtype` (None: float32; 'bfloat16'
    keeps bf16), computing in `compute_dtype` (default: `dtype`). options: attention, remat,
    vision_remat (see Qwen2_5_VL).

    Tensors go to their devices one at a time as they are read, so host memory holds one
    tensor beyond what the devices keep. With `mesh`, each is cut straight into its shards by
    the logical axes and `rules` (default `sharding.DEFAULT_RULES`), as `shard` would place
    it: no device ever holds a whole copy of the model, and calls run sharded.
    """
    cfg = Qwen25VLConfig.from_pretrained(hf_dir)
    dtype = _as_dtype(dtype or jnp.float32)
    place = _single_device if mesh is None else _into_shards(cfg, mesh, rules)
    params, layout = hf.load_params(hf_dir, cfg, dtype=np.dtype(dtype), progress=progress, place=place)
    return Qwen2_5_VL(cfg, params, compute_dtype or dtype, hf_layout=layout, source_dir=hf_dir, mesh=mesh,
                      **options)


# Transfers are asynchronous and keep their host source alive until done: waiting for each
# lets the host copy go before the next tensor is read, whatever the device's pace.

def _single_device(path, value: np.ndarray) -> jax.Array:
    return jax.device_put(value).block_until_ready()


def _onto(value, sharding) -> jax.Array:
    """`value` placed with `sharding`. Across processes, from this process's own copy (every
    process holds the same params): each device takes its slice, where `device_put` of a
    local array would first check the copies agree by gathering them all."""
    if sharding.is_fully_addressable or (isinstance(value, jax.Array) and not value.is_fully_addressable):
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _into_shards(cfg: Qwen25VLConfig, mesh, rules):
    """place(path, value) for hf.load_params: each device gets only its own piece of the tensor."""
    from flax import traverse_util
    from mmjax import sharding
    from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
    shardings = traverse_util.flatten_dict(sharding.param_shardings(
        abstract_params(cfg), logical_axes(cfg), mesh, rules or sharding.DEFAULT_RULES))

    def place(path, value: np.ndarray) -> jax.Array:  # the callback runs for addressable devices only
        return jax.make_array_from_callback(value.shape, shardings[path],
                                            lambda index: value[index]).block_until_ready()
    return place
