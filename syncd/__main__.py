from syncd.startup import main

main()
