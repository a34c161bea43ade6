"""``xferclass review`` with the tests' tiny backbone registered (run by test_review_browser)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for helpers

import helpers  # noqa: E402, F401  (registers the test_tiny backbone)
from xferclass.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["review", *sys.argv[1:]]))
