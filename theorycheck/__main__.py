from theorycheck.cli import main

main()
