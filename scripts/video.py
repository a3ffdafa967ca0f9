#!/usr/bin/env python
"""Turn a run's network snapshots into network.gif (and network.mp4 with ffmpeg); see bimt/pictures/video.py."""

import sys

from bimt.pictures.video import main

if __name__ == "__main__":
    sys.exit(main())
