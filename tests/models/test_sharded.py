import os
import subprocess
import sys


def test_sharded_forward_on_8_devices_equals_single_device():
    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(here, "sharded_forward.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]
