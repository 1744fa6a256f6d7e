"""Sample selection from difficulty scores (SPEC.md 2, 2.4) on hand-built score records and tiny JSONL data."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from mmjax.data import sources
from mmjax.difficulty import selection as sel
from mmjax.difficulty import selection_levels, selection_source
from mmjax.difficulty.score_file import ScoreWriter, read_scores
from mmjax.jobs import recipe, build

NAN = math.nan

# row: stored PISM level, lambda*, stored CMAB level, CMAB paper score, correct. The stored
# levels are what the SPEC 2.1 / 2.2 default thresholds give for these numbers.
ROWS = [
    (0, "unsolved", 0.0, "unsolved", 1.0, False),
    (1, "easy", NAN, "easy", 0.05, True),
    (2, "medium", 0.5, "hard", 1.0, True),
    (3, "hard", 0.3, "medium", 0.3, True),
    (4, "hard", 0.1, "easy", 2.5, True),
    (5, "medium", 0.7, "medium", 1.7, True),
    (6, "easy", 0.8, "hard", 0.5, True),
    (7, "unsolved", 0.0, "unsolved", NAN, False),
]


def _record(row, pism="", lam=NAN, cmab_level="", paper=NAN, correct=True, code=NAN, id_=None):
    return {"id": id_ if id_ is not None else f"r{row}", "source_row": row, "where": f"d.jsonl:{row + 1}",
            "task": "math", "ratios": [0.0, 0.1], "passes": [1, 0], "attempts": 10, "lambda_star": lam,
            "pism_level": pism, "cmab_paper": paper, "cmab_code": code, "cmab_level": cmab_level,
            "correct": correct}


def _records(order=None):
    records = [_record(r, p, lam, c, s, ok) for r, p, lam, c, s, ok in ROWS]
    return [records[i] for i in order] if order is not None else records


def _select(records=None, **kw):
    return sel.select(_records() if records is None else records, sel.SelectionConfig(score_file="s.parquet", **kw))


def _rows(selection):
    return selection.source_rows.tolist()


# ---- subsets, levels, combinations -------------------------------------------------------------

@pytest.mark.parametrize("kw,expected", [
    (dict(subset="full"), [0, 1, 2, 3, 4, 5, 6, 7]),
    (dict(subset="levels", levels="mid+hard"), [2, 3, 4, 5]),
    (dict(subset="levels", levels="medium, hard"), [2, 3, 4, 5]),
    (dict(subset="levels", levels=("hard",)), [3, 4]),
    (dict(subset="levels", levels="easy"), [1, 6]),
    (dict(subset="levels", levels="unsolved"), [0, 7]),
    (dict(subset="levels", levels="mid+hard", method="cmab"), [2, 3, 5, 6]),
    (dict(subset="levels", levels="hard", method="cmab"), [2, 6]),
    # both methods rate the row medium or hard / either does
    (dict(subset="levels", levels="mid+hard", method="pism+cmab", combine="both"), [2, 3, 5]),
    (dict(subset="levels", levels="mid+hard", method="pism+cmab", combine="either"), [2, 3, 4, 5, 6]),
    (dict(subset="levels", levels="hard", method="pism+cmab", combine="either"), [2, 3, 4, 6]),
])
def test_subsets_pick_exactly_the_rows_at_their_levels(kw, expected):
    assert _rows(_select(**kw)) == expected
    # The file's record order does not matter: rows are source rows, ascending.
    assert _rows(_select(_records(order=[5, 2, 7, 0, 1, 6, 4, 3]), **kw)) == expected


def test_the_level_mix_of_the_selected_and_of_all_rows():
    got = _select(subset="levels", levels="mid+hard", method="pism+cmab", combine="either")
    assert got.mix == {"pism": {"easy": 1, "medium": 2, "hard": 2}, "cmab": {"easy": 1, "medium": 2, "hard": 2}}
    assert got.available["pism"] == {"unsolved": 2, "easy": 2, "medium": 2, "hard": 2}
    assert got.available["cmab"] == {"unsolved": 2, "easy": 2, "medium": 2, "hard": 2}
    assert got.total == 8 and len(got) == 5
    summary = json.loads(json.dumps(got.summary()))  # JSON-able as written to selection.json
    assert summary["selected"] == 5 and summary["source_rows"] == [2, 3, 4, 5, 6]
    assert summary["config"]["combine"] == "either"
    assert "selected 5 of 8 rows" in got.describe() and "pism {easy 1, medium 2, hard 2}" in got.describe()


def test_random_subsets_are_seeded():
    a = _select(subset="random", n=3, seed=7)
    assert _rows(a) == _rows(_select(subset="random", n=3, seed=7))
    assert _rows(a) == _rows(_select(_records(order=[7, 6, 5, 4, 3, 2, 1, 0]), subset="random", n=3, seed=7))
    assert len(set(_rows(a))) == 3 and _rows(a) == sorted(_rows(a))
    assert len({tuple(_rows(_select(subset="random", n=3, seed=s))) for s in range(6)}) > 1
    assert sum(a.mix["pism"].values()) == 3
    # n of a level subset: a random part of those rows only (SPEC 2.4's random-of-same-size).
    for seed in range(5):
        part = _rows(_select(subset="levels", levels="mid+hard", n=2, seed=seed))
        assert len(part) == 2 and set(part) <= {2, 3, 4, 5}
    with pytest.raises(sel.SelectionError, match=r"n=5 rows asked of the 4 .*levels=medium,hard"):
        _select(subset="levels", levels="mid+hard", n=5)


def test_a_random_subset_sized_by_levels_has_their_row_count():
    # ROWS by stored PISM level: medium 2 (rows 2, 5), hard 2 (3, 4); by CMAB: hard 2 (2, 6).
    for seed in range(4):
        same = _select(subset="random", size_of="medium", seed=seed)
        assert _rows(same) == _rows(_select(subset="random", n=2, seed=seed))  # n = |medium| = 2, the same draw
    assert len(_select(subset="random", size_of="mid+hard", seed=1)) == 4
    assert len(_select(subset="random", size_of="easy,medium,hard", seed=1)) == 6  # easy: rows 1, 6
    drawn = {r for seed in range(20) for r in _rows(_select(subset="random", size_of="hard", seed=seed))}
    assert drawn == set(range(8))  # from every row, whatever its level
    records = [r for r in _records() if r["pism_level"] != "hard"]
    with pytest.raises(sel.SelectionError, match=r"size_of='hard': no row is at those levels"):
        sel.select(records, sel.SelectionConfig(score_file="s.parquet", subset="random", size_of="hard"))


# ---- value and quantile thresholds ---------------------------------------------------------------

def test_pism_value_thresholds_relevel_from_lambda_star():
    # Stored levels are ignored in value mode: rows 2 and 5 are stored "easy" on purpose.
    records = [_record(0, "unsolved", 0.0), _record(1, "easy", NAN), _record(2, "easy", 0.5),
               _record(3, "hard", 0.3), _record(4, "easy", 0.1 * 7), _record(5, "easy", 0.6),
               _record(6, "medium", 0.8)]

    def levels(**kw):
        config = sel.SelectionConfig(threshold_mode="value", **kw)
        return selection_levels.method_levels(selection_levels.score_columns(records, ""), "pism", config).tolist()

    # SPEC 2.1 table: hard <= 0.4 < medium <= 0.7 < easy; 0.1 * 7 = 0.7000000000000001 is still 0.7.
    assert levels() == ["unsolved", "easy", "medium", "hard", "medium", "medium", "easy"]
    # SPEC 2.1 text puts 0.7 in easy; and a wider hard band.
    assert levels(pism_medium_max=0.6) == ["unsolved", "easy", "medium", "hard", "easy", "medium", "easy"]
    assert levels(pism_hard_max=0.5) == ["unsolved", "easy", "hard", "hard", "medium", "medium", "easy"]
    got = sel.select(records, sel.SelectionConfig(subset="levels", levels="hard", threshold_mode="value",
                                                  pism_hard_max=0.5))
    assert _rows(got) == [2, 3] and got.mix == {"pism": {"hard": 2}}


def test_cmab_value_thresholds_and_the_score_column():
    # paper scores of the solved rows 1..6: 0.05, 1.0, 0.3, 2.5, 1.7, 0.5; hard band [0.2, 1.2]
    kw = dict(subset="levels", levels="hard", method="cmab", threshold_mode="value",
              cmab_easy_below=0.1, cmab_hard_from=0.2, cmab_hard_to=1.2, cmab_easy_above=1.9)
    assert _rows(_select(**kw)) == [2, 3, 6]
    assert _rows(_select(**{**kw, "levels": "medium"})) == [5]
    assert _rows(_select(**{**kw, "levels": "easy"})) == [1, 4]
    # The `code` definition reads the cmab_code column instead.
    records = _records()
    for r, code in zip(records, [NAN, 1.0, 3.0, 3.0, 0.5, 3.0, 3.0, NAN]):
        r["cmab_code"] = code
    assert _rows(_select(records, **kw, cmab_definition="code")) == [1, 4]


def test_cmab_quantile_thresholds_reproduce_a_target_mix():
    # solved rows 1..6, distance of the paper score from 1: 0.95, 0, 0.7, 1.5, 0.7, 0.5
    kw = dict(subset="levels", method="cmab", threshold_mode="quantile", cmab_target_mix=(2, 2, 2))
    assert _rows(_select(levels="hard", **kw)) == [2, 6]
    assert _rows(_select(levels="medium", **kw)) == [3, 5]
    assert _rows(_select(levels="easy", **kw)) == [1, 4]
    assert _rows(_select(levels="unsolved", **kw)) == [0, 7]
    kw["cmab_target_mix"] = (1, 1, 4)  # shares: 4 of 6 hard, 1 medium, 1 easy
    assert _rows(_select(levels="hard", **kw)) == [2, 3, 5, 6]
    assert _rows(_select(levels="medium", **kw)) == [1]
    # pism+cmab: PISM by value, CMAB by quantile.
    both = _select(levels="mid+hard", **{**kw, "method": "pism+cmab"})
    assert _rows(both) == [2, 3, 5]  # PISM mid+hard {2, 3, 4, 5} and CMAB {1, 2, 3, 5, 6}


def test_rows_a_method_did_not_score_have_no_level(caplog):
    records = _records() + [_record(8, "medium", 0.5, "", NAN)]  # CMAB did not score row 8
    got = _select(records, subset="levels", levels="mid+hard", method="cmab")
    assert _rows(got) == [2, 3, 5, 6] and got.available["cmab"]["not_run"] == 1
    assert "1 of 9 rows have no cmab level" in caplog.text
    assert _rows(_select(records, subset="levels", method="pism")) == [2, 3, 4, 5, 8]
    # A method the scoring job did not run at all is an error, not an empty pick.
    no_cmab = [{**r, "cmab_level": ""} for r in records]
    with pytest.raises(sel.SelectionError, match=r"s.parquet: no row has a cmab level.*cmab \{not_run 9\}"):
        _select(no_cmab, subset="levels", method="pism+cmab", combine="either")
    assert _select(records, subset="full", method="cmab").mix["cmab"]["not_run"] == 1
    # Re-levelling keeps "not run": quantile ranks only the rows CMAB scored.
    kw = dict(method="cmab", threshold_mode="quantile", cmab_target_mix=(2, 2, 2))
    assert _select(records, **kw).available["cmab"] == {"unsolved": 2, "easy": 2, "medium": 2, "hard": 2,
                                                        "not_run": 1}


@pytest.mark.parametrize("kw,message", [
    (dict(subset="some"), r"subset='some' is not one of"),
    (dict(method="clip"), r"method='clip'"),
    (dict(combine="all"), r"combine='all'"),
    (dict(subset="levels", levels="mid+easy"), r"'mid\+easy' is not one of"),
    (dict(subset="levels", levels=""), r"at least one level"),
    (dict(subset="random"), r"needs n > 0"),
    (dict(subset="random", size_of="middling"), r"'middling' is not one of"),
    (dict(subset="random", n=3, size_of="hard"), r"size_of='hard' sizes a subset='random' draw without n"),
    (dict(subset="levels", size_of="hard"), r"size_of='hard' sizes .*subset='levels'"),
    (dict(n=-1), r"n=-1"),
    (dict(threshold_mode="quantile", cmab_target_mix=(1, 1, 1)), r"re-levels CMAB only"),
    (dict(method="cmab", threshold_mode="quantile"), r"target_mix"),
    (dict(method="cmab", threshold_mode="value", cmab_hard_from=2.0), r"easy_below <= hard_from"),
    (dict(pism_hard_max=0.8, pism_medium_max=0.7), r"pism_hard_max=0.8, pism_medium_max=0.7: .*hard_max <= medium"),
])
def test_config_mistakes_name_the_field(kw, message):
    with pytest.raises(ValueError, match=message):
        sel.SelectionConfig(**kw)


def test_an_empty_selection_names_the_file_and_the_levels_there():
    records = [r for r in _records() if r["pism_level"] != "hard"]
    with pytest.raises(sel.SelectionError) as e:
        sel.select(records, sel.SelectionConfig(score_file="w/scores.parquet", subset="levels", levels="hard"),
                   data_file="d.jsonl")
    message = str(e.value)
    assert "w/scores.parquet" in message and "d.jsonl" in message and "empty" in message
    assert "levels=hard by pism" in message and "its 6 rows" in message
    assert "pism {unsolved 2, easy 2, medium 2}" in message
    with pytest.raises(sel.SelectionError, match=r"pism\+cmab \(both\).* is empty"):
        _select(subset="levels", levels="hard", method="pism+cmab", combine="both")


# ---- against a real data file ----------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture(scope="module")
def tiny_jsonl(tmp_path_factory):
    """6 QA rows with ids a..f and a blank line after the second, so lines != indices."""
    root = tmp_path_factory.mktemp("selection_data")
    rng = np.random.default_rng(0)
    path = root / "data.jsonl"
    with open(path, "w") as f:
        for i, row_id in enumerate(IDS):
            Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(root / f"{row_id}.png")
            f.write(json.dumps({"id": row_id, "images": [f"{row_id}.png"], "task": "choice",
                                "prompt": "<image>Which colour? A. red B. blue", "solution": "A"}) + "\n")
            if i == 1:
                f.write("\n")
    return str(path)


def _score_file(tmp_path, rows, levels=None, ids=None, name="score"):
    """A score file written by the scoring job's writer: PISM levels for `rows`."""
    levels = levels or {}
    writer = ScoreWriter(str(tmp_path / name))
    writer.write([_record(r, levels.get(r, "easy"), id_=(ids or IDS)[r]) for r in rows])
    return writer.finish()


def test_selected_source_exposes_only_the_selected_rows(tiny_jsonl):
    source = sources.JsonlSource(tiny_jsonl, decode_images=False)
    picked = selection_source.SelectedSource(source, [4, 1, 2])
    assert len(picked) == 3 and "3 of 6 rows" in repr(picked)
    assert [picked[i]["id"] for i in range(3)] == ["e", "b", "c"]
    assert picked[0]["where"] == f"{tiny_jsonl}:6"  # the row's own line (after the blank one)
    with pytest.raises(IndexError, match=r"6 rows; selected rows \[6\] are outside"):
        selection_source.SelectedSource(source, [0, 6])


def test_a_score_file_missing_rows_names_both_files_and_the_counts(tiny_jsonl, tmp_path):
    source = sources.JsonlSource(tiny_jsonl)
    path = _score_file(tmp_path, [0, 1, 2, 4])
    cfg = sel.SelectionConfig(score_file=path, subset="levels")
    with pytest.raises(sel.SelectionError) as e:
        sel.apply(source, cfg)
    message = str(e.value)
    assert path in message and tiny_jsonl in message
    assert "scores 4 of the data's 6 rows; 2 are missing (e.g. rows [3, 5]); finish" in message
    # The scoring job's summary beside the file says why rows are missing, when it skipped some.
    summary = tmp_path / "score" / selection_source.SCORING_SUMMARY
    summary.write_text(json.dumps({"skipped_total": 2, "skipped": {"no_image": 2}}))
    with pytest.raises(sel.SelectionError, match=r"missing .*its scoring job skipped 2 rows: .*score_summary.json"):
        sel.apply(source, cfg)
    # A finished scoring job that counted exactly the missing rows as skipped (corrupt images,
    # no solution): they have no level, so they are left out, with a warning, not an error.
    summary.write_text(json.dumps({"skipped_total": 2, "skipped": {"image_unreadable": 2}, "rows": 6}))
    assert list(sel.apply(source, sel.SelectionConfig(score_file=path)).source_rows) == [0, 1, 2, 4]
    summary.write_text(json.dumps({"skipped_total": 1, "skipped": {"image_unreadable": 1}, "rows": 6}))
    with pytest.raises(sel.SelectionError, match=r"2 are missing"):
        sel.apply(source, cfg)


def test_a_score_file_of_another_dataset_is_caught(tiny_jsonl, tmp_path):
    source = sources.JsonlSource(tiny_jsonl)
    other = _score_file(tmp_path, range(6), ids=["a", "b", "x", "d", "y", "f"], name="other")
    with pytest.raises(sel.SelectionError, match=r"2 of its 6 ids differ.*row 2 is 'c' in the data and 'x'"):
        sel.apply(source, sel.SelectionConfig(score_file=other))
    longer = _score_file(tmp_path, range(6), name="longer")
    records = read_scores(longer) + [_record(9, "hard", id_="z")]
    with pytest.raises(sel.SelectionError, match=r"7 records, 1 of them for rows the data's 6 rows lack.*\[9\]"):
        selection_source.check_rows(records, source, longer)
    with pytest.raises(sel.SelectionError, match=r"1 source rows have more than one record.*\[3\]"):
        sel.select(read_scores(longer) + [_record(3, "hard", id_="d")], sel.SelectionConfig())


def test_ids_of_a_parquet_source_are_read_from_its_id_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": ["p", None, "r"], "solution": ["1", "2", "3"]}), path)
    assert selection_source.source_ids(sources.ParquetSource(str(path))) == ["p", "1", "r"]  # no id: the row index


def _data_config(tiny_jsonl, **selection):
    c = recipe.base()
    c.data.source = "jsonl"
    c.data.path = tiny_jsonl
    c.data.min_pixels, c.data.max_pixels = 28 * 28, 56 * 56
    c.data.min_vision_rows = 16
    c.data.batch_size = 1
    for key, value in selection.items():
        c.data.selection[key] = value
    return c


@pytest.fixture(scope="module")
def tiny_model():
    c = recipe.base()
    tok = build.tokenizer(c)
    return tok, build.model(c, tok)


def test_setup_dataset_yields_only_the_selected_rows(tiny_jsonl, tiny_model, tmp_path):
    path = _score_file(tmp_path, range(6), levels={1: "hard", 3: "medium", 4: "hard"})
    c = _data_config(tiny_jsonl, score_file=path, subset="levels", levels="mid+hard")
    tok, model = tiny_model
    batches = list(build.dataset(c, tok, model, num_epochs=1, shuffle=False))
    assert [b["meta"]["id"][0] for b in batches] == ["b", "d", "e"]
    assert [b["meta"]["where"][0] for b in batches] == [f"{tiny_jsonl}:{n}" for n in (2, 5, 6)]
    # Without a score file: every row.
    c.data.selection.score_file = ""
    assert len(build.selected_source(c.data)) == 6


def test_setup_turns_selection_problems_into_one_line_config_errors(tiny_jsonl, tmp_path):
    c = _data_config(tiny_jsonl, score_file=str(tmp_path / "nothing.parquet"))
    with pytest.raises(build.ConfigFieldError, match=r"config.data.selection: .*nothing.parquet: no such score"):
        build.selected_source(c.data)
    c.data.selection.score_file = _score_file(tmp_path, range(6))  # every row "easy"
    c.data.selection.subset = "levels"
    with pytest.raises(build.ConfigFieldError, match=r"config.data.selection: .*data.jsonl.*empty.*easy 6"):
        build.selected_source(c.data)
    c.data.selection.levels = "hardest"
    with pytest.raises(build.ConfigFieldError, match=r"config.data.selection: levels='hardest'"):
        build.selected_source(c.data)
    c.data.selection.lvls = "hard"
    with pytest.raises(build.ConfigFieldError, match=r"config.data.selection has unknown fields \['lvls'\]"):
        build.selected_source(c.data)


def test_the_recipes_selection_fields_are_selection_config_fields():
    from configs import difficulty_grpo

    assert build.dataclass_from(sel.SelectionConfig, recipe.base().data.selection, "x") == sel.SelectionConfig()
    got = build.dataclass_from(sel.SelectionConfig, difficulty_grpo.get_config().data.selection, "x")
    assert (got.subset, got.wanted_levels(), got.method) == ("levels", ("medium", "hard"), "pism")  # SPEC 2.4


def test_the_grpo_job_writes_the_selection_to_its_workdir(tiny_jsonl, tiny_model, tmp_path):
    from mmjax.jobs import grpo as grpo_job

    path = _score_file(tmp_path, range(6), levels={0: "medium", 5: "hard"})
    c = _data_config(tiny_jsonl, score_file=path, subset="levels", levels="mid+hard")
    c.grpo.num_generations = 2
    workdir = tmp_path / "run"
    tok, model = tiny_model
    grpo_job.build_trainer(c, str(workdir), tok=tok, model=model)
    written = json.loads((workdir / sel.REPORT).read_text())
    assert (written["selected"], written["total"], written["source_rows"]) == (2, 6, [0, 5])
    assert written["mix"] == {"pism": {"medium": 1, "hard": 1}} and written["available"]["pism"]["easy"] == 4
    assert written["score_file"] == path and written["data_file"] == tiny_jsonl


def test_an_unknown_stored_level_is_an_error_naming_the_file_row_id_and_value(tiny_jsonl, tmp_path):
    source = sources.JsonlSource(tiny_jsonl)
    path = _score_file(tmp_path, range(6), levels={1: "hard", 3: "EASY!", 4: "hard"})
    for subset in ("levels", "full"):  # "full" reads the levels for its mix: it had shown up only there
        with pytest.raises(sel.SelectionError) as e:
            sel.apply(source, sel.SelectionConfig(score_file=path, subset=subset))
        assert str(e.value) == (
            f"score file {path}: row 4 (id 'd', source row 3) has pism_level 'EASY!', which is not a level: "
            "allowed are 'unsolved', 'easy', 'medium', 'hard' or '' (not scored); rescore the file or fix the value")
    # The scoring workdir named instead of the file: the file is named all the same.
    with pytest.raises(sel.SelectionError, match=re.escape(f"score file {path}: row 4")):
        sel.apply(source, sel.SelectionConfig(score_file=str(tmp_path / "score"), threshold_mode="value"))
    # The jobs turn it into one config error line.
    c = _data_config(tiny_jsonl, score_file=path, subset="levels", levels="mid+hard")
    with pytest.raises(build.ConfigFieldError, match=r"config.data.selection: score file .*row 4 .*'EASY!'"):
        build.selected_source(c.data)


def test_stored_levels_a_method_may_hold_and_the_columns_checked(tmp_path):
    # A JSONL score file: its rows are its lines. "unscored" is a CMAB level only; null = not run.
    records = [_record(r, "easy", 0.8, "easy", 0.05) for r in range(4)]
    records[1]["cmab_level"] = "unscored"
    records[2]["cmab_level"] = None
    records[3]["cmab_level"] = "Hard"
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    got = read_scores(str(path))
    config = dict(score_file=str(path), subset="levels", levels="easy")
    with pytest.raises(sel.SelectionError, match=re.escape(f"score file {path}: row 4 (id 'r3', source row 3) "
                                                           "has cmab_level 'Hard'") + ".*'unscored' or ''"):
        sel.select(got, sel.SelectionConfig(method="pism+cmab", **config))
    # PISM alone never reads cmab_level: the selection goes on.
    assert _rows(sel.select(got, sel.SelectionConfig(method="pism", **config))) == [0, 1, 2, 3]
    got[3]["cmab_level"] = "hard"
    picked = sel.select(got, sel.SelectionConfig(method="cmab", **config))
    assert _rows(picked) == [0] and picked.available["cmab"] == {"easy": 1, "hard": 1, "unscored": 1, "not_run": 1}
    for r in got:
        r["pism_level"] = "unscored"
    with pytest.raises(sel.SelectionError, match=r"row 1 \(id 'r0', source row 0\) has pism_level 'unscored'.*"
                                                 r"; 3 more rows have unknown pism_level values"):
        sel.select(got, sel.SelectionConfig(method="pism", **config))
