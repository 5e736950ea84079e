"""Kept for existing imports: the language detector lives in retrieval/language.py, below both ingest and app."""

from retrieval.language import SUPPORTED, detect_language, language_scores

__all__ = ["SUPPORTED", "detect_language", "language_scores"]
