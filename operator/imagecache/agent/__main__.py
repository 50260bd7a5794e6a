"""`python -m imagecache.agent` == `imagecache-agent`."""

from imagecache.agent.main import main

main()
