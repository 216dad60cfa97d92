"""XEmoGPT as released (arXiv 2602.05496): CLIP + VECB and HuBERT + AECB front ends, checkpoint loading, the
released prompt, and the serving pipeline (profile `xemogpt`)."""
