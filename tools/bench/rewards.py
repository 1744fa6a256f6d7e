"""Rewards on adversarial policy text: mmjax's bounded parsing and math budgets vs references.

  python tools/bench/rewards.py [--repeats 20000] [--ref-repeats 500] [--rounds 5] [--row 0.3]
  python tools/bench/rewards.py --quick      # small inputs, 2 rounds, short budgets: a smoke test

The speed half of tests/rewards/test_reward_bounds.py (the tests keep the behaviour: scores,
timeout counts, replaced workers). Everything is measured in this run, on this host:

  * boxed parsing: each reward on "<think>x</think>\\boxed{answer}" followed by N truncated
    "\\boxed{" (a policy can emit this), at N and 4N. Cost is CPU time (a busy shared host
    delays a call, it does not make it cost more), GC paused, the best of --rounds, cheap and
    costly calls taken in turns. Printed: the cost growth at 4x the input (linear: ~4x;
    target <= 8x) and the reference's, `last_boxed` by its definition (rescan from each
    "\\boxed{" back to the end: quadratic, ~16x), and the time of one call of each at the
    reference's size (its N is smaller: at 20000 it needs minutes);
  * OCR fuzzy match: the reward on a long rambling answer against a short target vs one
    read of the answer (`ocr.normalise_text`), the reference (target <= 5x);
  * math budgets (wall time, worker processes):
    - an adversarial batch (8 answers that run for seconds to forever in sympy, 8 normal
      ones) against its budget: 20 row budgets + the pool's start-up, measured here;
    - a batch deadline (16 such answers, --row per row, --batch for the batch) vs the same
      batch without the deadline (every row runs out its row budget, 2 workers);
    - a hung worker given up at 0.2 s by the parent vs the same check waiting for the
      worker's own timer (--hung-row seconds).

The last line is JSON: every figure, and the behaviour the tests check (scores, timeout
counts) so that --quick can be run as a test without judging any time.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import signal
import sys
import time

# (reward, options, boxed answer, target, expected value): the rows of test_reward_bounds.
BOXED_REWARDS = [
    ("format", {"container": "boxed"}, "1", None, 1.0),
    ("jigsaw", {"container": "boxed"}, "2,1,3", [2, 1, 3], 1.2),
    ("jigsaw_code", "code", "2,1,3", [2, 1, 3], 0.2),  # the released reading: the unclosed last box
    ("accuracy_math", {"container": "boxed"}, "3/4", "3/4", 1.0),
    ("accuracy_choice", {"container": "boxed"}, "B", "B", 1.0),
    ("accuracy_ocr", {"container": "boxed"}, "hello world", "hello world", 1.0),
    ("accuracy_count", {"container": "boxed"}, "3", "3", 1.0),
    ("accuracy_grounding", {"container": "boxed"}, "[0, 0, 10, 10]", [[0, 0, 10, 10]], 1.0),
    ("accuracy", {"container": "boxed", "task": "choice"}, "B", "B", 1.0),
]
# Each runs for seconds to forever in sympy.
ADVERSARIAL = [
    "2^{2^{2^{2^{2^{2}}}}}", "10^{10^{10}}", "9^{9^{9^{9}}}", "3^{3^{3^{3^{3}}}}",
    "(10^{10})!", "(10^{100})!", "10000000!", "2^{2^{40}}",
]
NORMAL = [  # (answer, target, expected): quick for math-verify
    ("\\frac{3}{4}", "0.75", 1.0), ("2\\sqrt{2}", "\\sqrt{8}", 1.0), ("x = 2", "2", 1.0), ("0.5", "1/3", 0.0),
    ("\\pi/2", "\\frac{\\pi}{2}", 1.0), ("2^{10}", "1024", 1.0), ("\\binom{10}{3}", "120", 1.0),
    ("\\frac{1}{2}", "0.5", 1.0),
]


def rescanning_last_boxed(text):
    """The definition: from the last ``\\boxed{`` back, the first whose content balances."""
    end = len(text)
    while (start := text.rfind("\\boxed{", 0, end)) >= 0:
        depth, i = 1, start + len("\\boxed{")
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start + len("\\boxed{"):i]
            i += 1
        end = start
    return None


class _TooSlow(BaseException):
    """Not an Exception, so the rewards' own error handling cannot swallow it."""


def cpu_seconds(call, guard_seconds: float) -> float:
    """CPU time of one call, GC paused; ``guard_seconds`` of wall time stop it (_TooSlow)."""

    def stop(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, stop)
    gc.disable()
    signal.setitimer(signal.ITIMER_REAL, guard_seconds)
    start = time.process_time()
    try:
        call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        gc.enable()
        signal.signal(signal.SIGALRM, previous)
    return time.process_time() - start


def best_pair(cheap, costly, rounds: int, guard_factor: float = 40.0) -> tuple[float, float]:
    """(fastest cheap, fastest costly) CPU seconds, timed in turns; costly is inf if it ran
    past ``guard_factor`` x the cheap call (a quadratic parser on a big input)."""
    best_cheap = best_costly = math.inf
    for _ in range(rounds):
        best_cheap = min(best_cheap, cpu_seconds(cheap, guard_seconds=1e6))
        try:
            best_costly = min(best_costly, cpu_seconds(costly, guard_seconds=guard_factor * best_cheap + 0.05))
        except _TooSlow:
            return best_cheap, math.inf
    return best_cheap, best_costly


def boxed_text(answer: str, repeats: int) -> str:
    return f"<think>x</think>\\boxed{{{answer}}}" + "\\boxed{" * repeats


def bench_parsing(args) -> dict:
    from mmjax import rewards
    from mmjax.rewards import parsing
    out = {"repeats": args.repeats, "ref_repeats": args.ref_repeats, "rewards": {}}
    small, big = boxed_text("1", args.ref_repeats), boxed_text("1", 4 * args.ref_repeats)
    assert parsing.last_boxed(small) == parsing.last_boxed(big) == rescanning_last_boxed(small) == "1"
    mm = best_pair(lambda: parsing.last_boxed(small), lambda: parsing.last_boxed(big), args.rounds)
    ref = best_pair(lambda: rescanning_last_boxed(small), lambda: rescanning_last_boxed(big), args.rounds,
                    guard_factor=1e6)
    out["last_boxed"] = dict(mmjax_s=mm, reference_s=ref, mmjax_growth=mm[1] / mm[0], reference_growth=ref[1] / ref[0],
                             ratio=ref[0] / mm[0])
    print(f"last_boxed at N={args.ref_repeats} truncated boxes: mmjax {1e3 * mm[0]:.3f} ms, rescanning reference "
          f"{1e3 * ref[0]:.1f} ms; ratio reference / mmjax: {ref[0] / mm[0]:.1f}x")
    print(f"last_boxed, 4x the input: mmjax {mm[1] / mm[0]:.1f}x the time, reference {ref[1] / ref[0]:.1f}x "
          "(linear: 4x, quadratic: 16x)")
    print(f"{'reward at N=' + str(args.repeats) + ' and 4N':44s} {'N ms':>9s} {'4N ms':>9s} {'growth':>8s}  target")
    for name, opts, answer, target, expected in BOXED_REWARDS:
        opts = dict(rewards.JIGSAW_PRESETS[opts]) if isinstance(opts, str) else dict(opts)
        task = opts.pop("task", None)
        fn = rewards.get(name.removesuffix("_code"), **opts)
        columns = {} if task is None else {"task": task}
        small, big = boxed_text(answer, args.repeats), boxed_text(answer, 4 * args.repeats)
        scores = [fn([small], [target], **columns)[0], fn([big], [target], **columns)[0]]
        cheap, costly = best_pair(lambda: fn([small], [target], **columns), lambda: fn([big], [target], **columns),
                                  args.rounds)
        growth = costly / cheap
        out["rewards"][name] = dict(seconds=[cheap, costly], growth=growth, scores=scores, expected=expected)
        shown = f"{growth:7.1f}x" if math.isfinite(growth) else "  >40x (stopped)"
        print(f"{name:44s} {1e3 * cheap:9.2f} {1e3 * costly:9.2f} {shown}  <= 8x")
    return out


def bench_ocr(args) -> dict:
    from mmjax import rewards
    from mmjax.rewards import ocr
    target = "the quick brown fox jumps over the lazy dog " * 3  # under difflib's autojunk size
    answer = "a quick brown cat naps under the lazy sun " * args.ocr_repeats
    fn = rewards.get("accuracy_ocr")
    text = f"<answer>{answer}</answer>"
    score = fn([text], [target])[0]
    read, scored = best_pair(lambda: ocr.normalise_text(answer), lambda: fn([text], [target]), args.rounds)
    print(f"OCR fuzzy match of a {len(answer)}-char answer: mmjax {1e3 * scored:.2f} ms, one read of the answer "
          f"(reference) {1e3 * read:.2f} ms; ratio mmjax / reference: {scored / read:.1f}x (target <= 5x)")
    return dict(chars=len(answer), mmjax_s=scored, reference_s=read, ratio=scored / read, score=score)


def start_pool(workers: int) -> float:
    """Seconds from no pool to a first answer: the start-up a batch may add to its budget."""
    from mmjax.rewards import MathBudget, math_check
    math_check._pool.close()
    start = time.perf_counter()
    assert math_check.check_batch([("1", "1.0")], MathBudget(row_seconds=5.0, workers=workers)) == [True]
    return time.perf_counter() - start


def bench_math(args) -> dict:
    from mmjax import rewards
    from mmjax.rewards import MathBudget, math_check
    workers, row = 2, args.row
    startup = start_pool(workers)
    out = {"startup_s": startup, "row_seconds": row, "workers": workers}

    # An adversarial batch against its budget.
    completions, targets, expected = [], [], []
    for bomb, (answer, target, value) in zip(ADVERSARIAL, NORMAL):
        completions += [f"<answer>{bomb}</answer>", f"<answer>{answer}</answer>"]
        targets += ["3", target]
        expected += [0.0, value]
    combined = rewards.combine({"accuracy_math": 1.0}, {"accuracy_math": {"timeout_seconds": row, "workers": workers}})
    start = time.perf_counter()
    res = combined(completions, targets)
    took = time.perf_counter() - start
    bound = 20 * row + startup
    out["adversarial"] = dict(rows=len(completions), seconds=took, bound_s=bound, ratio=took / bound,
                              scores=res.per_function["accuracy_math"], expected=expected, metrics=res.metrics)
    print(f"adversarial batch, {len(completions)} rows ({len(ADVERSARIAL)} that never finish), {row} s per row: "
          f"mmjax {took:.2f} s; budget 20 rows' worth + start-up {startup:.2f} s = {bound:.2f} s; "
          f"ratio mmjax / budget: {took / bound:.2f}x (target < 1x; unbounded: up to 6 x 5 s per bad row)")

    # A batch deadline vs the same batch without one.
    bombs = ADVERSARIAL * 2
    texts = [f"<answer>{b}</answer>" for b in bombs] + ["<answer>7</answer>"]
    golds = ["3"] * len(bombs) + ["7"]
    runs = {}
    for label, batch in (("deadline", args.batch), ("no_deadline", None)):
        assert math_check.check_batch([("1", "1.0")], MathBudget(workers=workers)) == [True]  # pool up
        rewards.pop_metrics()
        fn = rewards.get("accuracy_math", timeout_seconds=row, batch_timeout_seconds=batch, workers=workers)
        start = time.perf_counter()
        scores = fn(texts, golds)
        runs[label] = dict(seconds=time.perf_counter() - start, scores=scores, metrics=rewards.pop_metrics())
    with_s, without_s = runs["deadline"]["seconds"], runs["no_deadline"]["seconds"]
    out["deadline"] = dict(rows=len(texts), batch_seconds=args.batch, **runs,
                           ratio=without_s / with_s, expected=[0.0] * len(bombs) + [1.0])
    print(f"batch deadline {args.batch} s on {len(texts)} rows: mmjax {with_s:.2f} s, without the deadline "
          f"(reference) {without_s:.2f} s; ratio reference / mmjax: {without_s / with_s:.1f}x; "
          f"mmjax / deadline: {with_s / args.batch:.2f}x (target < 3x)")

    # A hung worker: the parent gives up at 0.2 s instead of waiting for the worker's own timer.
    budget = MathBudget(row_seconds=args.hung_row, workers=workers)
    assert math_check.check_batch([("1", "1.0")], budget) == [True]
    start = time.perf_counter()
    waited = math_check.check_batch([(ADVERSARIAL[0], "3")], budget)
    waited_s = time.perf_counter() - start
    kill_after = math_check._kill_after
    math_check._kill_after = lambda row_seconds: 0.2
    try:
        before = list(math_check._pool.workers)
        start = time.perf_counter()
        killed = math_check.check_batch([(ADVERSARIAL[0], "3")], budget)
        killed_s = time.perf_counter() - start
        replaced = sum(w not in math_check._pool.workers for w in before)
    finally:
        math_check._kill_after = kill_after
    out["hung"] = dict(row_seconds=args.hung_row, killed_s=killed_s, waited_s=waited_s, ratio=waited_s / killed_s,
                       results=[killed[0], waited[0]], replaced=replaced)
    print(f"hung worker given up at 0.2 s: mmjax {killed_s:.2f} s, waiting for the worker's own {args.hung_row} s "
          f"timer (reference) {waited_s:.2f} s; ratio reference / mmjax: {waited_s / killed_s:.1f}x; "
          f"mmjax / row budget: {killed_s / args.hung_row:.2f}x (target < 1x)")
    math_check._pool.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20_000, help="N truncated boxes after the answer (and 4N)")
    ap.add_argument("--ref-repeats", type=int, default=500, help="N for the quadratic reference parser (and 4N)")
    ap.add_argument("--ocr-repeats", type=int, default=2000, help="repeats of a 42-char sentence in the OCR answer")
    ap.add_argument("--rounds", type=int, default=5, help="timed turns of each CPU-time pair (the best counts)")
    ap.add_argument("--row", type=float, default=0.3, help="math-verify seconds per row")
    ap.add_argument("--batch", type=float, default=0.5, help="math-verify seconds per batch (deadline case)")
    ap.add_argument("--hung-row", type=float, default=3.0, help="the hung worker's own row budget")
    ap.add_argument("--skip-math", action="store_true", help="only the CPU-time benches (no worker processes)")
    ap.add_argument("--quick", action="store_true",
                    help="N=2000 (reference 100), OCR 200 repeats, 2 rounds, hung row budget 1 s: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.ref_repeats, args.ocr_repeats, args.rounds, args.hung_row = 2000, 100, 200, 2, 1.0

    out = {"parsing": bench_parsing(args), "ocr": bench_ocr(args)}
    if not args.skip_math:
        out["math"] = bench_math(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
