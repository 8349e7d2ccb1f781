"""`python -m appdata.cli`: how the local stack starts its own processes."""

from appdata.cli import main

main()
