from ddsem.cli import main

main()
