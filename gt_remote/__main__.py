from gt_remote.cli import main

main()
