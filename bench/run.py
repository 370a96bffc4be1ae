"""The performance book; kept so the old command keeps working: see bench/book.py.

python bench/run.py            # = python bench/book.py (every section, full sizes)
python bench/run.py --quick    # = python bench/book.py --quick (the CI smoke, < 60 s)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import book

if __name__ == "__main__":
    raise SystemExit(book.main())
