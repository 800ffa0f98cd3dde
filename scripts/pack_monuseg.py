"""Pack the MoNuSeg training tiles for a GPU machine: ``pack_data.py monuseg`` (kept under
its old name, which older notes cite).

    python scripts/pack_monuseg.py [DATA] OUT   # e.g. ../shared/data .gpu_data/monuseg
"""

import sys

from pack_data import main

if __name__ == "__main__":
    main(["monuseg", *sys.argv[1:]])
