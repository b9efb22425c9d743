"""The meta-plugin: pod annotations → NADs → attachments (see cni/delegator/entry.py)."""
