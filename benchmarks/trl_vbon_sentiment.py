"""vBoN with TRL's RLOO trainer on the review LM, evaluated exactly while training.

A thin wrapper of :mod:`bonmath.trl_sentiment` (see there):

    python benchmarks/trl_vbon_sentiment.py [--smoke] --out FILE.json
    accelerate launch --cpu --num_processes 2 -m bonmath.trl_sentiment [--smoke] --out FILE.json
"""

from bonmath.trl_sentiment import main

if __name__ == "__main__":
    main()
