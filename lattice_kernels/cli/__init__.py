"""Command-line tools: each module exposes build_parser(), run(args) and main(argv)."""
