"""Patterns: non-homogeneous states of the full network born at transverse bifurcations."""
