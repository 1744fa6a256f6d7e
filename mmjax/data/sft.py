"""SFT targets: the answer tokens a processed sample is trained to produce, and their batches.

    transforms = [task, ProcessSample(...), AnswerTokens(tok, eos_token_id)]
    batch_fn = SftBatcher(Batcher(...), pad_id)

`AnswerTokens` (a grain Map, runs in the workers after `ProcessSample`) tokenises the
sample's solution, optionally in the SPEC 2.3 reasoning format, and ends it with EOS. It
never truncates: an answer longer than `max_answer_length` is skipped (or raises), like an
overlong prompt. A sample without a solution is skipped and counted, naming its row.

`SftBatcher` is the prompt `Batcher` (left-padded prompts, positions, vision tables: the
batch a GRPO rollout starts from) plus the answers as right-padded "completions":

  targets      int32 [B, Tc]  answer tokens + EOS, then pad_id
  target_mask  bool  [B, Tc]  True on the answer tokens and the EOS

Tc is a bucket (`mmjax.processing.buckets`), so compiles repeat. The loss reads only
these positions: prompt, image and padding tokens carry none by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from mmjax import containers
from mmjax.data.batching import Batcher
from mmjax.data.skips import Skipped, skip_or_raise
from mmjax.processing.buckets import bucket_size

ANSWER_FORMATS = ("plain", "think")


def answer_text(solution: str, answer_format: str = "plain", container: str = containers.ANSWER) -> str:
    """The text an SFT model learns to write for `solution`.

    plain: the solution as is. think: the SPEC 2.3 layout the system prompt asks for,
    "<think></think>" then the answer in its container (`<answer>X</answer>` or
    `\\boxed{X}`): rows carry a final answer, not a reasoning trace, so the think block
    is empty.
    """
    if answer_format == "plain":
        return solution
    if answer_format == "think":
        return "<think></think>" + containers.wrap_answer(solution, container)
    raise ValueError(f"answer_format={answer_format!r}: expected one of {ANSWER_FORMATS}")


@dataclasses.dataclass(frozen=True)
class AnswerTokens(grain.transforms.Map):
    """{"inputs", "meta"} (a `ProcessSample` output) -> the same plus "target": int32 ids.

    Attributes:
      tokenizer: the HF tokenizer the prompt was tokenised with.
      eos_token_id: appended to every answer (<|im_end|>, what ends an assistant turn).
      answer_format: "plain" or "think" (`answer_text`).
      max_answer_length: most answer tokens, EOS included; None = no limit.
      strict: raise `DataError` instead of skipping a sample without a usable answer.
    """

    tokenizer: Any
    eos_token_id: int
    answer_format: str = "plain"
    max_answer_length: int | None = None
    strict: bool = False

    def __post_init__(self):
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format={self.answer_format!r}: expected one of {ANSWER_FORMATS}")
        if self.max_answer_length is not None and self.max_answer_length < 1:
            raise ValueError(f"max_answer_length={self.max_answer_length}: must be >= 1 (None: no limit)")

    def map(self, element: Any) -> Any:
        if isinstance(element, Skipped):
            return element
        meta = element["meta"]
        where = meta.get("where") or meta.get("id") or "?"
        solution = meta.get("solution")
        if solution is None or not str(solution).strip():
            return skip_or_raise(self.strict, "missing_solution", where,
                                 f"solution is {solution!r}: nothing to train on")
        text = answer_text(str(solution), self.answer_format, meta.get("container") or containers.ANSWER)
        ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + [int(self.eos_token_id)]
        if self.max_answer_length is not None and len(ids) > self.max_answer_length:
            return skip_or_raise(self.strict, "answer_too_long", where,
                                 f"answer has {len(ids)} tokens (EOS included) > max_answer_length "
                                 f"{self.max_answer_length}; not truncated, as the model would never see its end")
        return {**element, "target": np.asarray(ids, np.int32)}


@dataclasses.dataclass(frozen=True)
class SftBatcher:
    """batch_fn: the prompt `Batcher`'s batch plus "targets" / "target_mask" (module docstring).

    bucket_lengths: explicit answer-length buckets; None uses `mmjax.processing.buckets`' rule.
    """

    prompts: Batcher
    pad_id: int
    bucket_lengths: tuple[int, ...] | None = None

    def __call__(self, processed: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.prompts(processed)
        answers = [p["target"] for p in processed]
        longest = max(len(a) for a in answers)
        try:
            length = bucket_size(longest, sizes=self.bucket_lengths)
        except ValueError as e:
            raise ValueError(f"an answer of {longest} tokens: {e}; set max_answer_length <= the largest "
                             f"bucket") from None
        targets = np.full((len(answers), length), self.pad_id, np.int32)
        mask = np.zeros((len(answers), length), bool)
        for row, answer in enumerate(answers):
            targets[row, :len(answer)] = answer
            mask[row, :len(answer)] = True
        batch["targets"], batch["target_mask"] = targets, mask
        return batch
