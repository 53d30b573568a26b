import sys

from onecert.cli import main

sys.exit(main())
