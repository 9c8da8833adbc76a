"""Fuzz harnesses for the packet parsers and the request path; run them with run.py."""
