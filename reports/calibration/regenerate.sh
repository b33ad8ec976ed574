#!/bin/sh
# Regenerates reports/calibration/ from the repository's root (release build, about 15 minutes
# on the 2-core development machine: the unknowns at 1/64 scale, then the chosen boot under three designs).
#   sh reports/calibration/regenerate.sh [path/to/tdxsim]
set -eu
tdxsim=${1:-target/release/tdxsim}
"$tdxsim" sweep scenarios/sweeps/calibration.toml --out reports/calibration
"$tdxsim" report reports/calibration
"$tdxsim" sweep scenarios/sweeps/calibration-designs.toml --out reports/calibration/designs
"$tdxsim" report reports/calibration/designs
