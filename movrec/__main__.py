import sys

from movrec.main import main

sys.exit(main())
