"""The paper-table tooling: run logs, the Last/Best table and figures, the paper's own numbers (scripts/make_tables.py)."""
