"""Command-line tools: one module per command, each with build_parser(), run(args) and main(argv)."""
