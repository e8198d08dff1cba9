"""Demo NPU serving runtime: a small OpenAI-compatible server that stands in for vLLM on the demo site.

Standard library only. It checks the model files against the publisher's signed manifest before it
serves, and in a prefill/decode pair it moves a KV payload sized by the model's KV-per-token formula
from the prefill process to the decode process over real HTTP.
"""

__version__ = "1.0.0"
