"""Seeded random samplers for degradation parameters. Every draw takes an explicit generator."""
