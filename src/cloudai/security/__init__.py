"""Cluster identity and credentials: certificates, join and API tokens."""
