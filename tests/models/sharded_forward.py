"""Run as a script with 8 host devices: the sharded forward must equal the single-device one."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import sharding  # noqa: E402
from mmjax.models.qwen2_5_vl import Qwen2_5_VL, preset  # noqa: E402
from oracle import pad_batch, pixels, sample_ids  # noqa: E402


def main():
    assert jax.device_count() == 8, jax.devices()
    cfg = preset("tiny")
    rng = np.random.default_rng(0)
    per_sample = [[(1, 4, 4)], [], [(1, 4, 6)], [(1, 6, 4), (1, 4, 4)]]
    ids, mask = pad_batch([sample_ids(rng, [3 + i] + [2] * len(g), g) for i, g in enumerate(per_sample)])
    ids = np.where(ids == 250, cfg.image_token_id, ids)
    ids = np.where(ids == 252, cfg.vision_start_token_id, ids)
    grids = np.array([g for gs in per_sample for g in gs])
    pv = pixels(rng, grids)
    model = Qwen2_5_VL.from_config(cfg, seed=3)
    single = model.logits(ids, mask, pv, grids)
    for shape in [dict(data=1, fsdp=4, tensor=2), dict(data=2, fsdp=2, tensor=2)]:
        mesh = sharding.make_mesh(**shape)
        sharded_model = Qwen2_5_VL(cfg, model.params).shard(mesh)
        kernel = sharded_model.params["language_model"]["layers_0"]["mlp"]["gate_proj"]["kernel"]
        n_shards = len({str(s.index) for s in kernel.addressable_shards})
        assert n_shards == shape["fsdp"] * shape["tensor"], (shape, kernel.sharding)  # really split
        out = sharded_model.logits(ids, mask, pv, grids)
        err = np.abs(out - single)[mask.astype(bool)].max()
        assert err < 1e-5, (shape, err)
        print(shape, "max |diff|", err)
    print("SHARDED_OK")


if __name__ == "__main__":
    main()
