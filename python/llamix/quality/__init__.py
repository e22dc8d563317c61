"""Quantize and export (GGUF), perplexity / KL divergence, and greedy model soups."""
