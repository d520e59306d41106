from edgeguard.cli import main

main()
