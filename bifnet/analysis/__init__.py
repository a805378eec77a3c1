"""Analyses of network dynamics: Lyapunov spectra, validation of linear
predictions, power spectra and cross-frequency coupling."""
