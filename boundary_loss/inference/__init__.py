"""Predictions of trained runs as NIfTI volumes in each case's own geometry (`predict`)."""
