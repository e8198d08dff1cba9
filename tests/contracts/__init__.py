"""Contract tests: every adapter of a port (real or fake) must pass the same behaviours."""
