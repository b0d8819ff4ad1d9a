"""Evaluation runs, plots, contact sheets and reports shared by every method."""
