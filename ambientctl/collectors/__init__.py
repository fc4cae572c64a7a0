"""Collectors: run the fixed catalogue of read-only commands on targets, store raw output.

They do I/O and nothing else: no parsing, no filtering.
"""
