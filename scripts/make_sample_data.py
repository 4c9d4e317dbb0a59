"""Write the synthetic sample sections to a folder (default: sample_data/).

    python scripts/make_sample_data.py [OUT_DIR] [--aligned]

Deterministic (seed 0): the files match what napari's File ▸ Open Sample ▸ napari-inrst shows.
"""

import argparse

from napari_inrst.synthetic.sample import write_sample

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="sample_data")
    ap.add_argument("--aligned", action="store_true", help="write the sections in their true place")
    a = ap.parse_args()
    for p in write_sample(a.out, misplace=not a.aligned):
        print(p)
