from announcer.cli import main

raise SystemExit(main())
