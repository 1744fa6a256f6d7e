"""Runs tools/bench scripts one after another in this one interpreter, so jax, torch and
transformers are imported once, not once per script (tests/tools/test_bench_quick.py).

    python tests/tools/bench_quick_all.py "gpu_check.py --tiny" "forward.py --quick" ...

Each script's output sits between `=== <script and arguments>` and `=== rc <exit code>`.
Order matters: a script that checks what it did not import (gpu_check) goes first.
"""

import os
import runpy
import sys
import traceback

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools", "bench")


def main(specs: list[str]) -> int:
    failed = 0
    for spec in specs:
        script, *args = spec.split()
        print(f"=== {spec}", flush=True)
        sys.argv = [script, *args]
        try:
            runpy.run_path(os.path.join(BENCH, script), run_name="__main__")
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else int(e.code is not None)
        except Exception:  # noqa: BLE001  (the script's failure is reported, the others still run)
            traceback.print_exc(file=sys.stdout)
            rc = 1
        print(f"=== rc {rc}", flush=True)
        failed += rc != 0
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
