"""Difficulty-aware sample selection (SPEC.md 2): PISM and CMAB scores, levels, selection."""
