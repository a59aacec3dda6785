"""Data stage: scan a source, validate it with GX, publish ASL_raw, split without leakage, publish ASL."""
