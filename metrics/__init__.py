"""selfx judges: pure functions over recorded numbers; never imports an LM, DSPy or MLflow."""
