"""Native IPAM plugins: host-local, static, whereabouts. Allocators are pure."""
