"""``python -m onecert.adapters.demo provider|carrier --id ID ...``."""

import sys

from onecert.adapters.demo._serve import main

sys.exit(main())
