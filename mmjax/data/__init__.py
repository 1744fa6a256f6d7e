"""Input data for mmjax: sources, task transforms, PISM masks, grain pipelines, batches.

  sources        JSONL / parquet / image and video folders / RGB-D pairs (tfds_io: TFDS)
  rows           the canonical row every source yields
  jigsaw, video_jigsaw, depth_jigsaw, qa   task transforms: row -> sample
  masking        PISM masks, vectorised over images x ratios x attempts
  pipeline       grain pipeline with per-process shards, workers, checkpointable state
  batching       processor -> padded, length-bucketed batches; repetition for G completions
  synthetic      verifiable synthetic data (shapes VQA, RGB-D scenes, moving-shape videos)
  skips          Skipped markers, DataError and the skip counter

Bad samples are never fatal and never silent: they become counted, logged `Skipped`
records (or `DataError` in strict mode). `tfds_io` is not imported here because
importing TFDS is slow; import it where needed.
"""

from mmjax.data.batching import Batcher, ProcessSample
from mmjax.data.depth_jigsaw import DepthJigsaw
from mmjax.data.jigsaw import ImageJigsaw
from mmjax.data.masking import make_masks, mask_images, mask_images_by_size
from mmjax.data.pipeline import PipelineConfig, build_dataset, skip_counter
from mmjax.data.qa import QaSample
from mmjax.data.rng import record_rng
from mmjax.data.skips import DataError, SkipCounter, Skipped
from mmjax.data.sources import (ImageFolderSource, JsonlSource, ParquetSource, RgbdSource,
                                VideoFolderSource)
from mmjax.data.video_jigsaw import VideoJigsaw

__all__ = [
    "Batcher", "DataError", "DepthJigsaw", "ImageFolderSource", "ImageJigsaw", "JsonlSource",
    "ParquetSource", "PipelineConfig", "ProcessSample", "QaSample", "RgbdSource", "SkipCounter",
    "Skipped", "VideoFolderSource", "VideoJigsaw", "build_dataset", "make_masks", "mask_images",
    "mask_images_by_size", "record_rng", "skip_counter",
]
