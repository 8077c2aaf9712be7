import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: the tests never use the network
sys.path.insert(0, str(Path(__file__).parent))  # tests import the checkpoint builder as `checkpoints`
