"""The base layer: errors, the address contract, paths and settings. No imports from above."""
