"""`python -m hsi.cli`: the same as the `hsi` command."""

from hsi.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
