"""rlsdk.testing: pytest fixtures and conformance checks for plugin authors (being written)."""
