"""Fleets: many sites, each driven through its own gateway (ansible-runner's transmit → worker → process)."""
