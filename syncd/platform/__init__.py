"""The Nebuly platform-users API: wire format, client."""
