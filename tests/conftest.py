import os
import sys

# Test helpers (tests/models/oracle.py, ...) are imported by name from any test directory.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
