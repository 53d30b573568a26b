"""Long reliability scenarios (``make stress``), a package so its helpers import by name."""
