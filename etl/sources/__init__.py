"""Vendor adapters, one module per vendor kind."""
