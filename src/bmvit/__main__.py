import sys

from bmvit.cli.main import main

sys.exit(main())
