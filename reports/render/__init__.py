"""Rendering report tables: CSV (SPEC 6), self-contained HTML (Jinja2, autoescape), SVG charts."""
