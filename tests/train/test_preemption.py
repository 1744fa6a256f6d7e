"""StopOnSignal: the first SIGTERM / SIGINT asks for a stop after the step, a second one kills
at once, and the previous handlers come back afterwards. (The jobs' stop-save-resume runs are
in tests/rl/test_kill_resume.py, tests/train/test_sft.py and tests/rl/test_multiprocess.py.)"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mmjax.train import preemption


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_requests_a_stop_and_the_handlers_come_back(signum):
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with preemption.StopOnSignal() as stop:
        assert not stop.requested and not stop.reached(1)
        os.kill(os.getpid(), signum)
        assert stop.requested and stop.signal == signum and stop.reached(2)
        # From here on the signal's default action applies: a second one is not deferred.
        assert all(signal.getsignal(s) is signal.SIG_DFL for s in preemption.SIGNALS)
        for s, handler in before.items():
            signal.signal(s, handler)  # (this test process must survive its own second signal)
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before


def test_without_a_signal_the_previous_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with preemption.StopOnSignal() as stop:
        assert all(signal.getsignal(s) == stop._handle for s in preemption.SIGNALS)
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before


def test_a_second_signal_ends_the_process_at_once():
    script = textwrap.dedent("""
        import os, signal, sys, time
        from mmjax.train import preemption
        with preemption.StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested
            print("first handled", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        print("not reached", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
    assert "first handled" in proc.stdout and "not reached" not in proc.stdout
    assert "SIGTERM received" in proc.stderr  # the first one is announced, with how to stop at once


def test_preempted_names_the_step_and_how_to_resume():
    message = str(preemption.Preempted(13))
    assert "after step 13" in message and "rerun the same command to resume" in message
    assert preemption.PREEMPTED_EXIT_CODE == 75
