"""Security tests: one case per finding of the adversarial review (issue 10)."""
