"""Continuous compliance (`sovkit monitor`): check a site on a schedule, attest each check, export metrics.

check.py runs one check (observe, policy, log verification, serving health) and attests it; decisionlog.py
writes the policy decision to the site's decision-log sinks; metrics.py is the Prometheus view; loop.py runs
checks until told to stop. The CLI reaches all of it through ``sovkit.api``.
"""
