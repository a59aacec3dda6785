"""Data stage: scan, validate (GX), publish ASL_raw, split without leakage, publish ASL."""
