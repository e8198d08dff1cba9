"""Provisioning: the Executor port, the ansible-runner executor, and host variables built from plans."""
