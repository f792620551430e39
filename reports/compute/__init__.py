"""Pure report arithmetic (SPEC 5): daily aggregates, billing quantities and amounts, reconciliation.

No database and no files here: inputs are arrays and DataFrames, outputs are tables.
"""
