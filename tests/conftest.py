import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "kernels")]  # shared helpers and the float64 loop oracle
os.environ.setdefault("OMP_NUM_THREADS", "2")
