"""Recorded state: what sovkit last installed on each host (serial, lineage, per-host components)."""
