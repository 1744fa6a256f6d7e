"""Tests of mmjax.data (a package, so test module names cannot clash with other dirs)."""
