"""``python -m svdgrad_cli``: the svdgrad command line."""

from svdgrad_cli.cli.app import main

if __name__ == "__main__":
    main()
