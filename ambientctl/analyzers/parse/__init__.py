"""Parsers: raw command output -> `ambientctl.model` objects.

Every parser takes the file's text and its bundle-relative path (for `SourceRef`s and
error messages) and raises only `ambientctl.errors.ParseError(path, line, reason)` on
malformed input. Parsing is linear; iptables rules are tokenised lazily per chain.
"""
