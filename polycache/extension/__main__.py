"""`python -m polycache.extension`: run the extension."""

from polycache.extension import main

if __name__ == "__main__":
    raise SystemExit(main())
