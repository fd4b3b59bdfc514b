"""selfx producers: everything that asks a model something (LM backends, DSPy programs, probes, explainers)."""
