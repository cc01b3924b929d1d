"""Test doubles that stand in for outside services (loopback only, standard library only)."""
