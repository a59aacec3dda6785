"""Triton serving: repository generator, local server launcher, model-metrics step."""
