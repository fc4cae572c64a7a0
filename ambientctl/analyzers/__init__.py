"""Pure analysis: parse raw files into the model, simulate packets, run checks.

Nothing in this package does I/O: it receives text and returns values.
"""
