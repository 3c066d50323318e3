from openmps.cli import main

main()
