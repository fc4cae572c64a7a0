"""Parsers: raw command output -> `ambientctl.model` objects.

Every parser takes the file's text and its bundle-relative path (for `SourceRef`s and
error messages) and raises only `ambientctl.errors.ParseError(path, line, reason)` on
malformed input. Parsing is linear; iptables rules are tokenised lazily per chain.
"""

from ambientctl.analyzers.parse.cluster import (
    parse_namespaces,
    parse_nodes,
    parse_pods,
    parse_services,
)
from ambientctl.analyzers.parse.host import parse_ss_listen, parse_sysctl
from ambientctl.analyzers.parse.iproute import parse_ip_addr, parse_ip_route, parse_ip_rule
from ambientctl.analyzers.parse.ipset import parse_ipset
from ambientctl.analyzers.parse.iptables import parse_iptables_save

__all__ = [
    "parse_ip_addr",
    "parse_ip_route",
    "parse_ip_rule",
    "parse_ipset",
    "parse_iptables_save",
    "parse_namespaces",
    "parse_nodes",
    "parse_pods",
    "parse_services",
    "parse_ss_listen",
    "parse_sysctl",
]
