"""Evaluation on CrossNER and other labelled data."""
