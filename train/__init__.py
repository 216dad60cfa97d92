"""Training XEmoGPT: VECB and AECB pre-training (stages 1-2) and emotional instruction tuning (stage 3).

The model is the serving one (engines/xemogpt: VideoFrontEnd, AudioFrontEnd, the released prompt) plus the
training-only heads of heads.py; checkpoints are written in the released key layout (checkpoint.py), so the
serving loader reads them. `xemo data build` (build.py) writes the data directory the stages read (data.py).
"""
