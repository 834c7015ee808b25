"""``python -m casemate.cli``."""

from casemate.cli.main import main

main()
