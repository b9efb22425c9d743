"""The CNI conformance harness: black-box spec checks against any plugin binary."""
