"""Filters: one module per filter; each registers itself with `curator.filters.base.register`."""
