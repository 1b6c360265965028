"""Data: slice loading and synthetic data (the data issue adds download, NIfTI, registration)."""
