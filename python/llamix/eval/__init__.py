"""Measuring models: perplexity and KL divergence as llama.cpp computes them, greedy model soups."""
from .perplexity import PerplexityResult, perplexity
from .soup import SoupResult, soup

__all__ = ["PerplexityResult", "SoupResult", "perplexity", "soup"]
