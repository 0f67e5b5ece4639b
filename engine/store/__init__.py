"""The run store: the only SQL (db.py), min-max decimation, every per-run file (files.py), the metrics export."""
