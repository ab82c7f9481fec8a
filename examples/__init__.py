"""Shims built on pyrunc's framework, installed as pyrunc.examples (see docs/writing-a-shim.md)."""
