"""``python -m imagecache.controller`` == ``imagecache-operator``."""

from imagecache.controller.main import main

main()
