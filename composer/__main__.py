"""``python -m composer``: the ``newsletter`` command line (:mod:`composer.cli`)."""

from composer.cli import main

if __name__ == "__main__":
    main()
