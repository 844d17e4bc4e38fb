"""Serving: load pushed bundles and answer recommendation queries."""
