"""Model merging (mergekit-compatible): config, parameters, methods, plan and streaming executor."""
