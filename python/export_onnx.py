from lattice_kernels.cli.export import main

raise SystemExit(main())
