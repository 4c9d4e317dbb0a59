"""Synthetic data with known truth: the analytic sample tissue (:mod:`.sample`) and atlases of single cells at any size (:mod:`.atlas`)."""
