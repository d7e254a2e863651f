"YAML run configurations shipped with wrpo (demo, ci, sweep, paper) and accelerate launch configs."
