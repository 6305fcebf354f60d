"""The `imgpack` command: one module per verb over the layers below; main() makes exit codes."""
