"""Pure report arithmetic (SPEC 5): daily aggregates, billing quantities and amounts, reconciliation.

No database and no files here: inputs are arrays and DataFrames, outputs are tables. May import
numpy, pandas, `etl.config` (the rule types), `etl.timefmt` and the invoice line type; never
SQLAlchemy or `etl.store` (a contract in pyproject.toml).
"""
