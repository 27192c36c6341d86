"""``python -m ecgvgg.pretrained MODEL.keras``: package a trained model as ecgvgg's pretrained model."""

import sys

from ecgvgg.pretrained import main

sys.exit(main())
