"""Scoring: turning logits into the compact per-token statistics that checks consume."""
