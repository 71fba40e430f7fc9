from curator.cli.app import main

main()
