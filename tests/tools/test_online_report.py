"""tools/online_report.py over a hand-made grid workdir: the table's cells are the seeds' mean
and range, step 0 is the starting model, zero-variance shares come from the runs' metrics."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import online_report  # noqa: E402


def _eval(runs, name, bench, score):
    os.makedirs(runs / name / "eval")
    (runs / name / "eval" / "results.json").write_text(json.dumps({"benchmarks": {bench: {"score": score}}}))


def test_table_and_plot_of_a_jigsaw_grid(tmp_path):
    runs = tmp_path / "runs"
    _eval(runs, "eval_base_3x3", "jigsaw", 0.1)
    for seed, (a, b) in enumerate([(0.2, 0.3), (0.4, 0.5)]):
        _eval(runs, f"eval_adaptive_s{seed}_32_3x3", "jigsaw", a)
        _eval(runs, f"eval_adaptive_s{seed}_64_3x3", "jigsaw", b)
        os.makedirs(runs / f"adaptive_s{seed}")
        rows = [{"step": 1, "frac_reward_zero_std": 0.5 + 0.25 * seed, "jigsaw/jigsaw_image/difficulty": 6.0}]
        (runs / f"adaptive_s{seed}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    online_report.main([str(tmp_path)])
    table = (tmp_path / "online.md").read_text()
    assert ("| adaptive @ 3x3 | 10.0 | 30.0 (20.0-40.0) | 40.0 (30.0-50.0) | 62.5 (50.0-75.0) | 62.5 (50.0-75.0) "
            "| 0.0 (0.0-0.0) |") in table
    report = json.loads((tmp_path / "online.json").read_text())
    assert report["training"]["adaptive"]["jigsaw_pieces_at_end"] == [6.0, 6.0]
    assert (tmp_path / "online.png").read_bytes()[:4] == b"\x89PNG"
