"""Transverse stability of homogeneous states: dispersion relations (eigenvalues
and Floquet exponents per connectome mode) and transverse bifurcation curves."""
