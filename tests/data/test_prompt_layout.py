"""QA prompt layouts: "question_first" reproduces the released CMAB script's [question, image] prompt."""

from __future__ import annotations

import numpy as np
import pytest

from mmjax.data import batching, prompts, qa
from mmjax.difficulty import cmab
from mmjax.jobs import recipe
from mmjax.models.capture import TEXT, TEXT_BEFORE_VISUAL, VISUAL, key_groups
from mmjax.processing import special_token_ids, tiny_tokenizer

QUESTION = "Where is the picture from?"
ROW = {"images": [np.full((56, 56, 3), 120, np.uint8)], "prompt": f"<image>\n{QUESTION}",
       "solution": "\\boxed{Google}", "task": "ocr"}  # the difficulty paper's data README row


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_question_first_puts_the_text_before_the_inputs():
    assert prompts.text_to_content(f"<image>\n{QUESTION}", 1, layout="question_first") == [
        {"type": "text", "text": f"\n{QUESTION}"}, {"type": "image"}]
    assert prompts.text_to_content(QUESTION, 1, layout="question_first") == [
        {"type": "text", "text": QUESTION}, {"type": "image"}]
    content = prompts.text_to_content("Compare <image> and <video>: same?", 1, 1, layout="question_first")
    assert content == [{"type": "text", "text": "Compare  and : same?"}, {"type": "image"}, {"type": "video"}]
    # The default keeps the row's order.
    assert [p["type"] for p in prompts.text_to_content(f"<image>\n{QUESTION}", 1)] == ["image", "text"]
    with pytest.raises(ValueError, match="1 <image>"):
        prompts.text_to_content("<image> and", 2, layout="question_first")
    with pytest.raises(ValueError, match="unknown prompt layout"):
        prompts.text_to_content(QUESTION, 1, layout="text_first")


def test_question_first_reorders_list_contents_and_keeps_other_turns():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    # A list content brings its own parts (qa_messages counts only string placeholders).
    out = prompts.qa_messages(messages, None, 0, 0, "answer", layout="question_first")
    assert out[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert out[1]["content"] == [{"type": "text", "text": "Where?"}, {"type": "image"}]
    # image_first leaves a list content alone.
    assert prompts.qa_messages(messages, None, 0, 0, "answer")[1]["content"][0] == {"type": "image"}


def test_qa_sample_layout_option():
    sample = qa.QaSample(layout="question_first").map(ROW)
    assert [p["type"] for p in sample["messages"][1]["content"]] == ["text", "image"]
    assert [p["type"] for p in qa.QaSample().map(ROW)["messages"][1]["content"]] == ["image", "text"]
    with pytest.raises(ValueError, match="unknown prompt layout"):
        qa.QaSample(layout="text_first")


def test_layout_defaults():
    assert recipe.base().data.prompt_layout == "image_first"
    assert cmab.DEFAULT_LAYOUT == {"paper": "image_first", "code": "question_first"}
    assert set(cmab.DEFAULT_LAYOUT) == set(cmab.DEFINITIONS)
    assert set(cmab.DEFAULT_LAYOUT.values()) <= set(prompts.LAYOUTS)


def _groups(tok, layout):
    """(decoded text of each CMAB key group, group sizes) for ROW processed in `layout`."""
    processed = batching.ProcessSample(tok).map(qa.QaSample(layout=layout).map(ROW))
    ids = np.asarray(processed["inputs"]["input_ids"])[None]
    special = special_token_ids(tok)
    groups = key_groups(ids, np.ones_like(ids), special.image_token_id, special.video_token_id)[0]
    text = {g: tok.decode(ids[0][groups[:, g] > 0]) for g in (VISUAL, TEXT, TEXT_BEFORE_VISUAL)}
    return text, groups.sum(axis=0)


def test_question_first_puts_the_question_in_the_text_before_the_image(tok):
    """The `code` CMAB definition's text group (before the first image) then holds the question."""
    first, first_sizes = _groups(tok, "question_first")
    assert QUESTION in first[TEXT_BEFORE_VISUAL]
    assert first[TEXT_BEFORE_VISUAL].startswith("<|im_start|>system")  # the header comes first
    image, image_sizes = _groups(tok, "image_first")
    assert QUESTION in image[TEXT] and QUESTION not in image[TEXT_BEFORE_VISUAL]
    # Same tokens, reordered: only the text-before-image group changes, by the question's tokens.
    assert first_sizes[VISUAL] == image_sizes[VISUAL] > 0
    question_tokens = len(tok(f"\n{QUESTION}")["input_ids"])
    assert first_sizes[TEXT_BEFORE_VISUAL] - image_sizes[TEXT_BEFORE_VISUAL] == pytest.approx(
        question_tokens, abs=2)
