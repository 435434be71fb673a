"""The embedded servers, one module each, and what they share (common)."""
