"""Test support: namespace fixtures, the API server double, helpers to exec the binary."""
