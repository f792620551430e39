"""Reading what reports need: sample arrays and series from the database, invoice files.

May import etl.store and etl.config; no pandas computations beyond building frames.
"""
