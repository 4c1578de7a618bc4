import sys

from tcflow.cli.main import main

sys.exit(main())
