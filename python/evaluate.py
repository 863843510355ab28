from lattice_kernels.cli.evaluate import main

raise SystemExit(main())
