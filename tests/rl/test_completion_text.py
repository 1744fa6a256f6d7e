"""What rewards read: a completion's tokens without its stop token (as TRL's skip_special_tokens)."""

import numpy as np

from mmjax import rewards
from mmjax.models.sampler import Rollout
from mmjax.processing import special_token_ids, tiny_tokenizer


def _rollout(tokens, lengths, stopped):
    tokens = np.asarray(tokens, np.int32)
    n = len(tokens)
    zeros = np.zeros(tokens.shape, np.float32)
    return Rollout(tokens=tokens, logprobs=zeros, sampling_logprobs=zeros, mask=tokens >= 0,
                   lengths=np.asarray(lengths, np.int32), stopped=np.asarray(stopped), prompt_index=np.arange(n),
                   num_generations=1)


def test_completion_ids_drop_only_the_stop_token():
    eos, pad = 9, 0
    out = _rollout([[5, 6, eos, pad], [7, 8, 3, 4], [eos, pad, pad, pad]], lengths=[3, 4, 1],
                   stopped=[True, False, True])
    # A row cut at max_new_tokens keeps its last token; a row that ended on EOS loses it.
    assert out.completion_ids() == [[5, 6], [7, 8, 3, 4], []]


def test_a_completion_that_stops_gets_its_format_reward():
    """Decoded with the stop token, '<answer>...</answer><|im_end|>' fails the whole-text format check."""
    tok = tiny_tokenizer()
    eos = special_token_ids(tok).eos_token_ids[0]
    answer = tok.encode("<think>x</think><answer>3,1,2</answer>", add_special_tokens=False)
    tokens = answer + [eos]
    out = _rollout([tokens], lengths=[len(tokens)], stopped=[True])
    fmt = rewards.get("format")
    assert fmt([tok.decode(tokens)], [None]) == [0.0]  # what the learner decoded before
    assert fmt([tok.decode(ids) for ids in out.completion_ids()], [None]) == [1.0]
