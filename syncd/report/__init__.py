"""The activation report: eligible users (platform) x active users (analytics API)."""
