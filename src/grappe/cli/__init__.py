"""The `grappe` command line."""
