#!/usr/bin/env python
"""Summarise every run under a directory: report.md, report.csv, networks.png (see bimt/experiment/report.py)."""

import sys

from bimt.experiment.report import main

if __name__ == "__main__":
    sys.exit(main())
