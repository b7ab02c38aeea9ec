from cxrviewer.cli import main
import sys

sys.exit(main())
