"""Data: manifest and downloads, safe extraction, NIfTI, registration, phantom,
preprocessing into a slice store, and tf.data pipelines."""
