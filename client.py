"""Run the chat client from a checkout: ``python client.py --name alice``."""
from chatcore.cli import main

raise SystemExit(main())
