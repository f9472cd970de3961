from gql_mail.cli import main

raise SystemExit(main())
