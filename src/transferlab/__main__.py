"""``python -m transferlab`` (and ``torchrun ... -m transferlab``): the command line."""

from transferlab.cli import main

if __name__ == "__main__":
    main()
