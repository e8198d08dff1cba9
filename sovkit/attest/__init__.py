"""Keys, DSSE envelopes, in-toto statements, and their offline verification."""
