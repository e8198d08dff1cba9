"""sovkit: take sovereign AI racks from bare OS to a serving, approved local model — and prove it."""

__version__ = "0.1.0"
