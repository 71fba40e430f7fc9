"""Filters: one module per filter; each registers itself with `curator.judge.base.register`."""
