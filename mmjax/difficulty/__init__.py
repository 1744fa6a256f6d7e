"""Difficulty-aware sample selection (SPEC.md 2): PISM and CMAB scores, levels, selection.

  pism        PISM levels and lambda* from survival curves (SPEC 2.1)
  cmab        CMAB scores and levels from captured attention masses (SPEC 2.2)
  scoring     the batched scoring engine behind mode=score (`Scorer`, `ScoreConfig`)
  score_file  the score file a scoring job writes and selection reads
  plots       PNG plots of a score file
"""
