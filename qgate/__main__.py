from qgate.cli import main

main()
