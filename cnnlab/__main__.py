from cnnlab.cli.main import main

main()
