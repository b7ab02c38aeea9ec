"""Image input/output."""
