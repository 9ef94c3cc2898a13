from cloudai.cli.main import main

raise SystemExit(main())
