"""The ``svdgrad`` command line (see :mod:`svdgrad_cli.cli.app`)."""
