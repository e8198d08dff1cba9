"""The serving planner: predict prefill/decode cost per chip, calibrate it, place pools under targets and power.

Prefill is compute-bound and decode memory-bandwidth-bound, so each phase may belong on different silicon;
this package turns the catalog's figures and a model's config.json into that decision.
"""
