"""The benchmark suite lives in ``bench/`` at the repository root, outside the
installed packages: put the root on the path so its modules import."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
