"""Measuring models: perplexity and KL divergence as llama.cpp computes them, greedy model soups,
multiple-choice tasks, and the evolutionary merge search (CMA-ES, candidates scored on Ray)."""
from .perplexity import PerplexityResult, perplexity
from .soup import SoupResult, soup
from .evolve import EvolveResult, evolve

__all__ = ["EvolveResult", "PerplexityResult", "SoupResult", "evolve", "perplexity", "soup"]
